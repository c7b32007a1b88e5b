"""Integration overhead: optiscope clippers inside Lightning and the HF Trainer vs their own.

A 2-layer GPT-2 (hidden 32) on random tokens, 24 optimizer steps per fit, on the CPU;
each sample is one whole ``fit``/``train`` (set-up included, as a user pays it), timed
round-robin against the framework's own norm clipping at the same threshold, medians of
the blocks:

- Lightning: ``Trainer(gradient_clip_val=1.0)`` vs ``OptiscopeCallback(clipper=NormClip(1.0))``
  and ``OptiscopeCallback(clipper=ZClip())`` (target: within 1.10x);
- HF Trainer: ``max_grad_norm=1.0`` vs ``max_grad_norm=0`` plus the callback with the same
  clippers (target: within 1.10x).

Run: ``python benchmarks/bench_integrations.py`` (needs ``optiscope[lightning,transformers]``).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from optiscope import NormClip, ZClip

STEPS, BATCH, SEQ, VOCAB = 24, 8, 16, 64


def _bench_clipping():
    # The shared timing and reporting helpers of the clipping benchmark.
    path = Path(__file__).with_name("bench_clipping.py")
    spec = importlib.util.spec_from_file_location("bench_clipping", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Tokens(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (STEPS * BATCH, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    model.loss_type = "ForCausalLM"
    return model


def lightning_fit(clipper=None, clip_val=None) -> None:
    import lightning.pytorch as pl

    from optiscope.integrations.lightning import OptiscopeCallback

    class LM(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = gpt2()

        def training_step(self, batch, batch_idx):
            return self.model(**batch).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    callbacks = [] if clipper is None else [OptiscopeCallback(clipper=clipper)]
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, gradient_clip_val=clip_val,
                         callbacks=callbacks)  # fmt: skip
    trainer.fit(LM(), DataLoader(Tokens(), batch_size=BATCH))


def hf_train(clipper=None, max_grad_norm=0.0) -> None:
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from optiscope.integrations.transformers import OptiscopeCallback

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=STEPS, per_device_train_batch_size=BATCH,
                                 max_grad_norm=max_grad_norm, save_strategy="no",
                                 report_to="none", use_cpu=True, disable_tqdm=True,
                                 logging_steps=STEPS)  # fmt: skip
        trainer = Trainer(model=gpt2(), args=args, train_dataset=Tokens())
        trainer.remove_callback(PrinterCallback)  # no log lines between the tables
        if clipper is not None:
            OptiscopeCallback(clipper=clipper).attach(trainer)
        trainer.train()


def main() -> None:
    bc = _bench_clipping()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides alike; shared machines
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        print(f"tiny GPT-2, {STEPS} optimizer steps of {BATCH} x {SEQ} tokens per fit")
        samples = bc.compare({
            "Lightning gradient_clip_val=1.0": lambda: lightning_fit(clip_val=1.0),
            "OptiscopeCallback(NormClip(1.0))": lambda: lightning_fit(NormClip(1.0)),
            "OptiscopeCallback(ZClip())": lambda: lightning_fit(ZClip()),
        }, inner=1, blocks=7)  # fmt: skip
        # report() prints microseconds; a whole fit is a fraction of a second or more.
        bc.report("Lightning fit", samples, "Lightning gradient_clip_val=1.0", "within 1.10x")
        samples = bc.compare({
            "HF Trainer max_grad_norm=1.0": lambda: hf_train(max_grad_norm=1.0),
            "OptiscopeCallback(NormClip(1.0))": lambda: hf_train(NormClip(1.0)),
            "OptiscopeCallback(ZClip())": lambda: hf_train(ZClip()),
        }, inner=1, blocks=7)  # fmt: skip
        bc.report("HF Trainer train", samples, "HF Trainer max_grad_norm=1.0", "within 1.10x")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
