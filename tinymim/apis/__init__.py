"""What the command-line tools do, as functions (mmseg's ``apis`` layout): the tools in
``tools/`` parse their arguments and call these. ``tinymim.apis.demo`` (the ``make demo``
chain) is imported on its own: it locates the project's configs when imported."""
from .checkpoints import (
    build_matching_vit,
    checkpoint_arch,
    convert_checkpoint,
    extract_student,
    infer_arch,
    save_student,
)
from .relations import build_distiller, compute_relations, draw_relations, visualize
from .tools import configs_dir, load_tool, tool_path, tools_dir

__all__ = ['build_distiller', 'build_matching_vit', 'checkpoint_arch', 'compute_relations', 'configs_dir',
           'convert_checkpoint', 'draw_relations', 'extract_student', 'infer_arch', 'load_tool', 'save_student',
           'tool_path', 'tools_dir', 'visualize']
