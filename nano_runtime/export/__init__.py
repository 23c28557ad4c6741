"""Export for phones: ExecuTorch ``.pte`` (its LLM runner) and an ONNX Runtime GenAI folder.

    metadata.py       the facts every artifact carries (one function for both exporters),
                      the supported-feature check, the quantization recipes' names
    pte.py            reference model -> torchao 8da4w -> torch.export -> XNNPACK -> .pte
    hf_checkpoint.py  our weights as a Hugging Face checkpoint (input of ORT GenAI's builder)
    onnx_genai.py     HF checkpoint -> ORT GenAI model builder -> genai_config.json + model.onnx
    runtimes.py       run the artifacts in their own runtimes and their same-quantization
                      references (used by tests/test_export*.py and benchmarks/bench_export.py)

Both exporters write into a temp directory renamed into place on success, so an
interrupted or failed export leaves nothing behind. See docs/ANDROID.md for how an
app runs each artifact.
"""
