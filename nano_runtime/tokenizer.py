"""Tokenizer: a HF `tokenizers` Tokenizer plus BOS/EOS rules and the chat template.

Saved as two files in a checkpoint directory: ``tokenizer.json`` (HF format)
and ``tokenizer_config.json`` ({bos_id, eos_id, add_bos, stop_ids,
chat_template}).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from tokenizers import Tokenizer as HFTokenizer

from .errors import NanoError

# End-of-generation token texts recognised in any vocabulary (as llama.cpp does).
EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<eos>", "</s>")


class Tokenizer:
    def __init__(self, tokenizer_json: str, bos_id: Optional[int], eos_id: Optional[int],
                 add_bos: bool, chat_template: Optional[str] = None,
                 stop_ids: Optional[list] = None):
        self.hf = HFTokenizer.from_str(tokenizer_json)
        self.tokenizer_json = tokenizer_json
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.chat_template = chat_template
        if stop_ids is None:
            stop_ids = sorted({i for i in [eos_id] + [self.hf.token_to_id(t) for t in EOG_TEXTS]
                               if i is not None})
        self.stop_ids = list(stop_ids)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    # -------------------------------------------------------------- encoding
    def encode(self, text: str, add_bos: Optional[bool] = None, special: bool = False) -> list:
        """Token ids of `text`. special=False treats control-token text as plain text
        (llama.cpp's parse_special=false); add_bos defaults to the model's rule."""
        self.hf.encode_special_tokens = not special
        ids = self.hf.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_bytes_len(self, ids) -> int:
        return len(self.decode(ids).encode("utf-8"))

    # ----------------------------------------------------------------- chat
    def apply_chat_template(self, messages: list, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise NanoError("this model has no chat template; use generate without --chat")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(msg):
            raise NanoError(f"chat template: {msg}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        tpl = env.from_string(self.chat_template)
        tok = self.hf.id_to_token
        return tpl.render(messages=messages, add_generation_prompt=add_generation_prompt,
                          bos_token=tok(self.bos_id) if self.bos_id is not None else "",
                          eos_token=tok(self.eos_id) if self.eos_id is not None else "")

    def encode_chat(self, messages: list, add_generation_prompt: bool = True) -> list:
        """Ids of a rendered chat; the template writes BOS itself where it wants one."""
        text = self.apply_chat_template(messages, add_generation_prompt)
        return self.encode(text, add_bos=False, special=True)

    # ------------------------------------------------------------- storage
    def config_dict(self) -> dict:
        return {"bos_id": self.bos_id, "eos_id": self.eos_id, "add_bos": self.add_bos,
                "stop_ids": self.stop_ids, "chat_template": self.chat_template}

    def save(self, directory: str):
        with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(self.tokenizer_json)
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(self.config_dict(), f, indent=2, ensure_ascii=False)
        if self.chat_template:
            with open(os.path.join(directory, "chat_template.jinja"), "w", encoding="utf-8") as f:
                f.write(self.chat_template)

    @classmethod
    def from_strings(cls, tokenizer_json: str, config: dict) -> "Tokenizer":
        return cls(tokenizer_json, config.get("bos_id"), config.get("eos_id"),
                   bool(config.get("add_bos")), config.get("chat_template"),
                   config.get("stop_ids"))

    @classmethod
    def load(cls, directory: str) -> "Tokenizer":
        try:
            with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
                tj = f.read()
            with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
                cfg = json.load(f)
        except FileNotFoundError as e:
            raise NanoError(f"{directory}: missing {os.path.basename(e.filename)}") from None
        return cls.from_strings(tj, cfg)
