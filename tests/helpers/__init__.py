"""Shared pieces of the tests: tiny models and configs, checkpoint writers, reference implementations,
subprocess runners and the training probe hook. Imported as ``tests.helpers.<module>`` (pytest puts the
repository root on ``sys.path``, since ``tests`` is a package)."""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repository
