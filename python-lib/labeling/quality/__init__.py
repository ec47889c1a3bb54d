"""Team quality: overlap, agreement, consensus, label issues and review."""
