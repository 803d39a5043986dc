"""Video data: procedural trajectory clips and the user's own video files, as model-ready items.

Both datasets yield {"video": float32 (3, T, H, W) in [-1, 1], "label": int, "index": int}.
"""

from shared.data.clips import (
    LoaderSettings,
    check_frame_counts,
    from_model_range,
    stack_videos,
    to_model_range,
    video_batches,
)
from shared.data.files import VideoFileDataset, load_video_file, open_video_array
from shared.data.trajectories import (
    SHAPES,
    TRAJECTORY_CLASSES,
    TRAJECTORY_PRESETS,
    TrajectoryConfig,
    TrajectoryVideos,
    render_clip,
    trajectory_config,
)

__all__ = [
    "LoaderSettings",
    "video_batches",
    "SHAPES",
    "TRAJECTORY_CLASSES",
    "TRAJECTORY_PRESETS",
    "TrajectoryConfig",
    "TrajectoryVideos",
    "VideoFileDataset",
    "check_frame_counts",
    "from_model_range",
    "load_video_file",
    "open_video_array",
    "render_clip",
    "stack_videos",
    "to_model_range",
    "trajectory_config",
]
