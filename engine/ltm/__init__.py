"""The LTM slice: runs of Labeled Transition Models."""
