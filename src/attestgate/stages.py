"""The trusted environments an artifact can be promoted into."""

STAGES = ("training", "fine-tuning", "deployment")
