"""Test double of the ``vampnet`` package (see interface.py). Not VampNet."""
