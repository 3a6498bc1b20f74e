"""Strategies: market data in, signals with narratives out (pure logic).

``base`` is the interface, ``registry`` knows which strategies exist (built-ins and
plug-ins), ``indicators`` holds the rolling statistics they share; each other module is
one strategy.
"""
