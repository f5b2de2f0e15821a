"""A call of hours: what the gateway sends the LLM each turn stays bounded, and the
LLM app still fits it into its window with the system prompt first (the real
SmolLM2 tokenizer and chat template, no engine)."""

from __future__ import annotations

import itertools

from transformers import AutoTokenizer

from deployments.llm.config import LlmArgs
from deployments.llm.conversation import Message, check_messages, fit_context
from gateway.session.context import ChatContext
from voxray.paths import models_dir

QUESTIONS = ["What time does the museum open on Sundays?",
             "And is there a discount for students, or only for children under twelve?",
             "Could you book two tickets for the afternoon, around three?"]
ANSWERS = ["It opens at ten in the morning and closes at six in the evening.",
           "Students with a valid card pay half price; children under twelve go in free.",
           "Done: two tickets for three o'clock. You will get them by email shortly."]
TURN_S = 12  # a question and its answer, spoken


def test_a_call_of_two_hours_sends_the_llm_the_same_each_turn() -> None:
    context = ChatContext(max_chars=4000)
    sizes = []
    turns = 2 * 3600 // TURN_S  # 600 turns: four times the 30-minute cap others have
    for n, q, a in zip(range(turns), itertools.cycle(QUESTIONS), itertools.cycle(ANSWERS),
                       strict=False):
        messages = context.with_user(f"{n}: {q}")
        context.commit_user(f"{n}: {q}")
        assert context.messages == messages or len(context.messages) < len(messages)
        context.agent_heard(a)
        sizes.append(len(context.messages))
    sent = context.messages
    assert max(sizes) == max(sizes[-100:]) < 80  # bounded, not growing with the call
    assert sent[0][0] == "user" and [r for r, _ in sent[:2]] == ["user", "assistant"]
    assert sent[-2][1].startswith(f"{turns - 1}:")  # the newest turn is whole
    assert sum(len(c) for _, c in sent[:-1]) <= 4000
    # the LLM app: system prompt first, the history fitted into the CPU profile's window
    args = LlmArgs(max_model_len=2048)
    tok = AutoTokenizer.from_pretrained(str(models_dir() / "smollm2-135m-instruct"))

    def encode(ms: list[Message]) -> list[int]:
        text = tok.apply_chat_template([m.as_dict() for m in ms], add_generation_prompt=True,
                                       tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    turns_ = check_messages([Message(r, c) for r, c in [*sent, ("user", "One more thing?")]],
                            args)
    fitted = fit_context(turns_, encode, 2048 - args.sampling.max_tokens)
    assert fitted.messages[0] == Message("system", args.system_prompt)
    assert fitted.messages[-1].content == "One more thing?"
    assert len(fitted.prompt_ids) <= 2048 - args.sampling.max_tokens
