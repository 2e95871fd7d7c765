"""Default prompt templates of the two tasks and the chat template built from the QA prompt; a processor stores its
own copy of each in `processor_config.json` / `chat_template.jinja`."""

from __future__ import annotations

# Planning prompt; the processor appends the `<traj>` token after it. The answer is the meta-action text.
DEFAULT_PLANNING_PROMPT: str = "Plan the next 3 seconds of the ego vehicle: give its meta action."

# QA prompt; `{question}` is replaced by the question. The answer is the nuScenes-QA answer text.
DEFAULT_QA_PROMPT: str = "Answer the question about the driving scene: {question}"

# A planning prompt with a high-level command (`DRIVING_COMMANDS`): the prompt, then the command.
COMMAND_PROMPT: str = "{prompt} Command: {command}."

# One user turn -> `question`: its text parts joined by a space (images are left out: the processor places the image
# tokens). Anything but a single user turn is refused: the model answers one question at a time.
_CHAT_TEMPLATE_HEAD: str = (
    "{%- if messages | length != 1 or messages[0]['role'] != 'user' -%}"
    '{{- raise_exception(\'OccVLA answers one user turn: expected [{"role": "user", "content": ...}]\') -}}'
    "{%- endif -%}"
    "{%- set content = messages[0]['content'] -%}"
    "{%- if content is string -%}{%- set question = content -%}"
    "{%- else -%}"
    "{%- set question = content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- endif -%}"
)


def _raw(text: str) -> str:
    """Jinja that writes `text` literally."""
    return f"{{% raw %}}{text}{{% endraw %}}" if text else ""


def qa_chat_template(qa_prompt: str) -> str:
    """The chat template that renders one user turn as `qa_prompt` with the turn's text as `{question}`, so that
    `apply_chat_template` (and the `image-text-to-text` pipeline's chat mode) build the prompt the processor builds
    from `question=`."""
    before, after = qa_prompt.split("{question}", 1)
    return _CHAT_TEMPLATE_HEAD + _raw(before) + "{{ question }}" + _raw(after)
