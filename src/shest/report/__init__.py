"""Report files: MultiQC custom content and figures."""
