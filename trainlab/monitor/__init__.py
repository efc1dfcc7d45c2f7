"""What a person watches: the rich console and TensorBoard."""
