"""Default prompt templates of the two tasks; a processor stores its own copy in `processor_config.json`."""

from __future__ import annotations

# Planning prompt; the processor appends the `<traj>` token after it. The answer is the meta-action text.
DEFAULT_PLANNING_PROMPT: str = "Plan the next 3 seconds of the ego vehicle: give its meta action."

# QA prompt; `{question}` is replaced by the question. The answer is the nuScenes-QA answer text.
DEFAULT_QA_PROMPT: str = "Answer the question about the driving scene: {question}"

# A planning prompt with a high-level command (`DRIVING_COMMANDS`): the prompt, then the command.
COMMAND_PROMPT: str = "{prompt} Command: {command}."
