"""Programs the host runs, shipped to it verbatim by cloud-init (components/backup_job.py): the backup job and
the restore. Standard library and boto3 only; the Pulumi program imports their constants from here."""
