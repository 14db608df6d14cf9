"""`sftmix eval` as a launcher runs it: the arguments are the command's."""

import sys

from sftmix.evaluation.cli import run_eval_cli

if __name__ == "__main__":
    run_eval_cli(sys.argv[1:])
