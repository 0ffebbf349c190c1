"""The machine sftlab runs on: hardware (the device, the process count, the measured bf16-or-fp32 choice of
`precision: auto`) and doctor (`sftlab doctor`: what sftlab sees of the machine, and what it would choose)."""
