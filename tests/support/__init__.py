"""Helpers the tests share: real service processes, ports, TCP proxies."""
