"""Network definitions: plain nn.Modules with shape contracts."""
