"""Plugins: the public API (:mod:`mqttbroker.plugins.api`) and its host (docs/plugins.md)."""

from .api import Action, Client, Decision, Message, NoOptions, Plugin, PluginContext

__all__ = ["Action", "Client", "Decision", "Message", "NoOptions", "Plugin", "PluginContext"]
