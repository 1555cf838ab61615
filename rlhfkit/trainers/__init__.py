"""One trainer per method; what they share lives in loop.py."""
