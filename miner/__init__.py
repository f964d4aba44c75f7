"""The miner: training, publishing, serving the committed model, self-evaluation."""
