"""Built-in backbone pretraining methods, one file each (registered by name; see ``..registry``)."""
