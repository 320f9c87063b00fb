"""num_workers=0 on a config whose base sets persistent_workers=True (mmseg's) runs in the main process."""
from tinymim.engine.runner import TinyMIMRunner


def test_no_workers_turns_persistent_workers_off():
    cfg = dict(batch_size=2, num_workers=0, persistent_workers=True, dataset=list(range(6)),
               sampler=dict(type='DefaultSampler', shuffle=False))
    loader = TinyMIMRunner.build_dataloader(cfg, seed=0)
    assert loader.num_workers == 0 and not loader.persistent_workers
    assert list(loader) == [[0, 1], [2, 3], [4, 5]]  # (mmengine's pseudo_collate: lists)
    assert cfg['persistent_workers'] is True  # the config itself is left as it was
    cfg.update(num_workers=1)
    assert TinyMIMRunner.build_dataloader(cfg, seed=0).persistent_workers
