"""The chat context: what the LLM is told happened. Only what was committed and played.

A user turn enters when it is committed (never a speculative guess); an agent
turn enters with exactly the words the caller heard. When nothing of the
agent's reply was heard (cut before its first whole word, or failed), the next
user turn continues the last one: with `join` they become one message.
It keeps the newest whole turns within `max_chars` (a turn starts at a user
message), so a call of hours sends the LLM the same amount each turn; the LLM
app fits those into its context window and puts its system prompt first.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from voxray.stage_clients.llm import TOOL_CALLS

Message = tuple[str, str]  # (role, content)


class ChatContext:
    def __init__(self, max_chars: int = 16_000) -> None:
        self._messages: list[Message] = []
        self._max_chars = max_chars
        self.instructions = ""  # a client's system prompt (the LLM app's own otherwise)

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    def with_user(self, text: str, join: bool = False) -> list[Message]:
        """The messages a reply to this user turn would be given (nothing is recorded)."""
        return self._system() + self._joined(text, join)

    def for_reply(self) -> list[Message]:
        """The messages a reply to the conversation as it stands would be given."""
        return self._system() + self._messages

    def _system(self) -> list[Message]:
        return [("system", self.instructions)] if self.instructions else []

    def _joined(self, text: str, join: bool) -> list[Message]:
        if join and self._messages and self._messages[-1][0] == "user":
            return [*self._messages[:-1], ("user", f"{self._messages[-1][1]} {text}")]
        return [*self._messages, ("user", text)]

    def commit_user(self, text: str, join: bool = False) -> None:
        self._messages = self._joined(text, join)
        self._trim()

    def truncate_agent(self, said: str, heard: str) -> None:
        """The caller heard only `heard` of an agent message recorded as `said`."""
        for i in range(len(self._messages) - 1, -1, -1):
            if self._messages[i] == ("assistant", said):
                if heard.strip():
                    self._messages[i] = ("assistant", heard.strip())
                else:
                    del self._messages[i]
                return

    def last_user(self) -> str:
        return self._messages[-1][1] if self._messages and self._messages[-1][0] == "user" else ""

    def add(self, messages: list[Message]) -> None:
        """Messages as they are (a tool exchange: the calls made and their results)."""
        self._messages += messages

    def remove(self, which: Callable[[str, str], bool]) -> bool:
        """Take out the newest message `which` picks; whether there was one."""
        for i in range(len(self._messages) - 1, -1, -1):
            if which(*self._messages[i]):
                del self._messages[i]
                return True
        return False

    def has_tool_call(self, call_id: str) -> bool:
        return any(role == TOOL_CALLS and any(c["id"] == call_id
                                              for c in json.loads(content)["calls"])
                   for role, content in self._messages)

    def agent_heard(self, text: str) -> None:
        """What the caller heard of the agent's reply (nothing: no message, and the next
        user turn joins the last one)."""
        text = text.strip()
        if text:
            self._messages.append(("assistant", text))

    def _trim(self) -> None:
        """Drop the oldest whole turns past max_chars; the newest turn always stays."""
        size = sum(len(c) for _, c in self._messages)
        drop = 0
        while size > self._max_chars:
            nxt = next((i for i in range(drop + 1, len(self._messages))
                        if self._messages[i][0] == "user"), None)
            if nxt is None:
                break
            size -= sum(len(c) for _, c in self._messages[drop:nxt])
            drop = nxt
        if drop:
            del self._messages[:drop]
