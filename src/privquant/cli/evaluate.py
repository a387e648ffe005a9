"""``privquant eval``: accuracy and size of a checkpoint or an export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privquant.errors import PrivquantError
from privquant.population.owner import checkpoint_dataset


def _cmd_eval(args: argparse.Namespace) -> int:
    from privquant.artifacts import load_checkpoint
    from privquant.data import load_dataset
    from privquant.quant import load_quantized
    from privquant.quant.export import fp32_size
    from privquant.training import evaluate

    folder = Path(args.folder)
    if (folder / "manifest.json").is_file():
        model, manifest = load_quantized(folder)
        size = manifest["size"]
        dataset = args.data
    else:
        from privquant.defenses.serving import apply_saved_outputs

        model, meta = load_checkpoint(folder)
        size = fp32_size(model)
        model = apply_saved_outputs(model, folder)
        dataset = checkpoint_dataset(meta, args.data)
    if not dataset:
        raise PrivquantError(f"{folder}: pass --data NAME to say which dataset to evaluate on")
    ds = load_dataset(dataset)
    test = evaluate(model, ds.x_test, ds.y_test)
    result = {"folder": str(folder.resolve()), "dataset": ds.name, "test_accuracy": test["accuracy"],
              "test_loss": test["loss"], "size_bytes": size["total_bytes"], "size": size}  # fmt: skip
    if args.onnx:
        from privquant.quant.onnx_export import onnx_logits, onnx_session
        from privquant.training import predict_logits

        onnx_path = folder / "model.onnx"
        ort = onnx_logits(onnx_session(onnx_path), ds.x_test)
        ours = predict_logits(model, ds.x_test)
        result["onnx"] = {"max_abs_diff": float(abs(ort - ours).max()),
                          "argmax_agreement": float((ort.argmax(1) == ours.argmax(1)).mean()),
                          "accuracy": float((ort.argmax(1) == ds.y_test).mean())}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{ds.name}: test accuracy {result['test_accuracy']:.4f}, {result['size_bytes']} bytes"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="accuracy and size of a checkpoint or quantized export")
    e.add_argument("folder")
    e.add_argument("--data", help="dataset (default: the one recorded in a checkpoint)")
    e.add_argument(
        "--onnx", action="store_true", help="also run FOLDER/model.onnx in ONNX Runtime and compare"
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_eval)
