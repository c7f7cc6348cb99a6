"""``python -m training.jobs supervise <jobs.sqlite> <job id>``: a job's supervisor process."""

import sys

from training.jobs.supervisor import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
