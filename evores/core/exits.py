"""Every exit code evores' commands end with, in one place (a batch script reads them)."""

EXIT_OK = 0  # done: the run finished with a winner, or the command did what it was asked
EXIT_REPORT_DIFFERS = 1  # `evores report`: summary.json differs from its recomputation
EXIT_USAGE = 2  # a user's mistake (bad config, unusable path, not a run directory): one line
EXIT_NO_RESULT = 4  # the run ended cleanly, but no evaluation it needed succeeded
EXIT_CHECKPOINTED = 75  # stopped early with a checkpoint (EX_TEMPFAIL): requeue and --resume
