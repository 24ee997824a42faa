"""Brokers: the `Broker` protocol, Alpaca paper (alpaca-py) and the simulated broker."""

from strategy_engine.brokers.base import Broker

__all__ = ["Broker"]
