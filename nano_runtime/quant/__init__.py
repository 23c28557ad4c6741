"""4-bit quantization into the .nano format (see nano_runtime/formats/nano_file.py).

* ``core``       groupwise int4 / int8 quantizers (RTN, clipped RTN) producing the packed
                 tensors of the .nano layout, with the kernels' reference packer.
* ``sources``    streams of fp tensors from a checkpoint, GGUF, .nano or a random-init card,
                 one tensor at a time (nano-1 never needs the whole model in memory).
* ``gguf_exact`` lossless import of GGUF Q4_1 / Q8_0 tensors.
* ``calib``      calibration text and token batches.
* ``gptq``, ``awq`` the calibrated methods, layer by layer.
* ``pipeline``   quantize_model(): any source, any method -> write_nano.
"""
