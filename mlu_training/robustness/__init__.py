"""Robustness: does what a method unlearned stay unlearned under audit and attack?"""
