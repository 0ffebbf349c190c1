"""`sftlab ui`: the whole workflow in a local web page, on top of run folders.

Run folders are the only state: the UI writes the config.yaml that `sftlab train` takes, starts `sftlab train` as a
child process into the run folder (its log in train.log there) and reads every view back from run folders, so a
refresh, a closed tab or a restarted UI loses nothing and runs started from the command line show up too.

  runs.py      run folders as the UI shows them: status, progress, the queue, starting/stopping `sftlab train`
  runner.py    the small parent of each `sftlab` child: waits for it, records its exit, starts the next queued run
  forms.py     the new-run form generated from TrainConfig (groups, defaults, help) and config validation
  security.py  loopback or key, cross-site requests, paths that must stay inside the UI's folders
  app.py       the FastAPI app: JSON API and the pages (templates/, static/ ship inside the package)
  i18n.py      English and Chinese interface text
"""
