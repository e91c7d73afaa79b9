"""Video: probing, cutting, encoding and checking MP4 files (ffmpeg, PyAV); frames for consumers; corruptions."""
