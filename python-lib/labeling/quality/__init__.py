"""Team quality: consensus, agreement, label issues and the review queue."""
