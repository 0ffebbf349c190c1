"""`sftlab ui`: the whole workflow in a local web page, on top of run folders.

Run folders are the only state: the UI writes the config.yaml that `sftlab train` takes, starts `sftlab train` as a
child process into the run folder (its log in train.log there) and reads every view back from run folders, so a
refresh, a closed tab or a restarted UI loses nothing and runs started from the command line show up too.

  manager.py   run folders as the UI shows them: status, progress, the queue, starting/stopping `sftlab train`
  runner.py    the small parent of each `sftlab` child: waits for it, records its exit, starts the next queued run
  forms.py     the new-run form generated from TrainConfig (groups, defaults, help) and config validation
  bodies.py    every request body as a pydantic model (TrainConfig's fields and bounds) and the one error shape
  context.py   what the routes share: the folders, and the one way a requested path, model or template is taken
  routes/      one APIRouter per resource: runs, data, chat, eval, export, pages
  security.py  loopback or key, cross-site requests, same-origin redirects
  app.py       the FastAPI app: the guards, the error handlers, the routers (templates/, static/ ship inside)
  pickers.py   the data files and models the pages offer
  preview.py   the Data page's preview and data check, in this process
  chat_models.py  the Chat page's loaded models
  jobs.py      a run's eval and export as child processes, started and read back
  i18n.py      English and Chinese interface text
"""
