"""Motion-feature backbones (I3D, SlowFast) that load the public checkpoints.

Import the backbone you need from its own module (``shared.motion.i3d``,
``shared.motion.slowfast``); ``shared.motion.inputs`` holds the input conventions they share.
This package imports nothing on purpose, so loading one backbone never builds the other.
"""
