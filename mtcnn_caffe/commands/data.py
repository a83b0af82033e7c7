"""``data random|landmarks|hard|pack``: the training-data generators (the ``prepare_data/*.py`` scripts
under one command; arguments and runners shared in :mod:`mtcnn_caffe.data.cli`)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` and its four generators."""
    from ..data import cli

    parser = subparsers.add_parser(
        "data", help="generate MTCNN training data: random crops, landmark samples, hard examples, LMDB packing",
        description="Generate MTCNN training data. Each generator writes OUT/stats.json; re-running an "
                    "interrupted command continues it (--overwrite starts over); results are the same for any -j.")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    steps = parser.add_subparsers(dest="generator", metavar="GENERATOR")

    random = steps.add_parser("random", help="random pos/part/neg crops of WIDER FACE (= gen_12/24/48net_data.py)",
                              description=cli.random_description(None))
    cli.add_random_args(random)
    random.set_defaults(func=cli.run_random)

    landmarks = steps.add_parser("landmarks", help="landmark samples of a 5-point list (= gen_landmark_data.py)",
                                 description=cli.LANDMARK_DESCRIPTION)
    cli.add_landmark_args(landmarks)
    landmarks.set_defaults(func=cli.run_landmarks)

    hard = steps.add_parser("hard", help="hard examples mined with the detector (= gen_hard_example.py)",
                            description=cli.hard_example_description(None))
    cli.add_hard_example_args(hard)
    hard.set_defaults(func=cli.run_hard_examples)

    pack = steps.add_parser("pack", help="mix a stage's samples into the training LMDB (= gen_net_imdb.py)",
                            description=cli.PACK_DESCRIPTION)
    cli.add_pack_args(pack)
    pack.set_defaults(func=cli.run_pack)
