//! batisync (skeleton)
