"""Training: the tf.data pipeline, the trainer and the shipped configs."""
