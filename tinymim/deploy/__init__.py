"""Deployment: ONNX export, ONNX Runtime inference and evaluation, INT8.

Importing this package needs none of the deploy extra's packages (onnx,
onnxruntime, onnxscript); the functions that use one import it then and
name it when it is missing (``pip install -e .[deploy]``).
"""
from .optional import MissingDependencyError, require
from .ort_segmentor import ONNXRuntimeSegmentor

__all__ = ['MissingDependencyError', 'ONNXRuntimeSegmentor', 'require']
