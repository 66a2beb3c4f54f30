"""Weight-sharing supernets behind one interface, their tasks and shipped checkpoints."""

from nas.supernets._hat_space import G2P_SPACE, WMT_SPACE, HATDesignSpace

__all__ = ["G2P_SPACE", "WMT_SPACE", "HATDesignSpace"]
