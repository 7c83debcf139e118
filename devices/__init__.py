"""Simulated sensor fleet that drives an MQTT broker under load (see the device-fleet issue).

It never imports ``mqttbroker``: it tests the broker from the outside, like any device would.
"""
