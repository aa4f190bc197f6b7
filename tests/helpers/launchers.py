"""How the tests start two processes: torchrun, or accelerate launch."""

from ports import free_port

LAUNCHERS = {
    "torchrun": lambda: ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())],
    # `accelerate launch --cpu --num_processes 2` silently runs one process: use --multi_gpu with use_cpu=True.
    "accelerate": lambda: [
        "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
    ],
}  # fmt: skip
