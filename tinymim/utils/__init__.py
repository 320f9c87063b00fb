from .safe_globals import register_mmengine_safe_globals

__all__ = ['register_mmengine_safe_globals']
