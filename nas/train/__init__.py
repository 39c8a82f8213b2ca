"""Training: the trainer (``train_model``), metrics (Dice per image, size-stratified) and sliding-window inference."""
