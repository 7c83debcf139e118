"""Scale-out: several broker nodes acting as one over Redis (docs/cluster.md).

Imported only when the config has a ``cluster`` section; nothing here is loaded otherwise.
"""
