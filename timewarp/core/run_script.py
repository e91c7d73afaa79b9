"""``python run_script.py <stage script> [options]``: how setup_dataset.sh and generate_data.sh run a stage.

The script runs as ``python <stage script> [options]`` would (same ``sys.argv``, ``__main__``), inside one
``try`` that starts before any import: a Ctrl-C at any moment, even while the stage still imports its
libraries, ends it quietly with status 130, and the shell script prints the one line
"interrupted; rerun the same command to resume" (timewarp/core/stage.sh).
"""
if __name__ == "__main__":  # (a module importing every file of the package runs nothing)
    try:
        import os
        import runpy
        import sys

        from timewarp.core.checkpoints import checkpoint

        script = sys.argv[1]
        sys.argv = sys.argv[1:]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        checkpoint("start, before the stage's imports")
        runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt:
        raise SystemExit(130)
