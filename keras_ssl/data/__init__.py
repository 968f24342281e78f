"""Host input pipelines. They yield uint8 images and int labels."""
