"""memaudit: does a language model leak its training data, and can the leak be removed?"""

__version__ = "0.1.0"
