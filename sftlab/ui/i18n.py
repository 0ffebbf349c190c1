"""The interface text in English and Chinese (`?lang=zh` or the switch in the header, kept in a cookie). Config keys,
values, file names and error sentences stay as sftlab writes them: they are what the YAML and the CLI say."""

from __future__ import annotations

LANGUAGES = ("en", "zh")

TEXT: dict[str, dict[str, str]] = {
    "runs": {"en": "Runs", "zh": "训练任务"},
    "new_run": {"en": "New run", "zh": "新建训练"},
    "data": {"en": "Data", "zh": "数据"},
    "chat": {"en": "Chat", "zh": "对话"},
    "eval": {"en": "Eval", "zh": "评测"},
    "export": {"en": "Export", "zh": "导出"},
    "language": {"en": "中文", "zh": "English"},
    "run": {"en": "Run", "zh": "任务"},
    "status": {"en": "Status", "zh": "状态"},
    "model": {"en": "Model", "zh": "模型"},
    "method": {"en": "Method", "zh": "方法"},
    "steps": {"en": "Steps", "zh": "步数"},
    "last_loss": {"en": "Last loss", "zh": "最新 loss"},
    "started": {"en": "Started", "zh": "开始时间"},
    "compare": {"en": "Compare", "zh": "对比"},
    "compare_hint": {"en": "Tick runs to overlay their loss curves.", "zh": "勾选多个任务以叠加对比其 loss 曲线。"},
    "no_runs": {"en": "No runs yet under", "zh": "还没有训练任务："},
    "queued": {"en": "queued", "zh": "排队中"},
    "running": {"en": "running", "zh": "训练中"},
    "finished": {"en": "finished", "zh": "已完成"},
    "failed": {"en": "failed", "zh": "失败"},
    "stopped": {"en": "stopped", "zh": "已停止"},
    "stopping": {"en": "stopping", "zh": "正在停止"},
    "run_name": {"en": "Run name", "zh": "任务名称"},
    "run_name_help": {"en": "The run's folder under the runs folder (default: run-DATE-TIME).",
                      "zh": "任务在 runs 文件夹下的目录名（默认：run-日期-时间）。"},
    "datasets_help": {"en": "Data files under the UI's folder, or upload one. A weight mixes several files. A file "
                            "that names its fields its own way: columns, message_keys and roles (docs/data.md, "
                            "\"Your own column names\").",
                      "zh": "UI 所在目录下的数据文件，或上传一个。多个文件可用权重混合。字段名不同的文件：用 columns、"
                            "message_keys 和 roles 指明（docs/data.md「Your own column names」）。"},
    "upload": {"en": "Upload a file", "zh": "上传文件"},
    "essentials": {"en": "What matters first", "zh": "最重要的设置"},
    "started_from": {"en": "Filled in from run {0}'s config: change what you like, then start.",
                     "zh": "已按任务 {0} 的配置填好：修改需要的项后开始。"},
    "start_from_this": {"en": "Start from this run's config", "zh": "以此任务的配置新建"},
    "method_defaults": {"en": "defaults of {0}", "zh": "{0} 的默认值"},
    "none_model": {"en": "— none —", "zh": "— 无 —"},
    "no_baseline": {"en": "— no baseline —", "zh": "— 不对比 —"},
    "unreadable": {"en": "unreadable", "zh": "无法读取"},
    "add_file": {"en": "Add file", "zh": "添加文件"},
    "remove": {"en": "Remove", "zh": "移除"},
    "weight": {"en": "weight", "zh": "权重"},
    "format_detected": {"en": "format: detected", "zh": "格式：自动识别"},
    "names": {"en": "its own names, e.g. {columns: {instruction: question, output: answer}}",
              "zh": "自定义字段名，例如 {columns: {instruction: 问题, output: 回答}}"},
    "default": {"en": "default", "zh": "默认"},
    "preview_data": {"en": "Preview data", "zh": "预览数据"},
    "preview_yaml": {"en": "Preview YAML", "zh": "预览 YAML"},
    "start": {"en": "Start", "zh": "开始训练"},
    "preview_title": {"en": "Trained tokens of the first examples (green: trained; grey: label -100)",
                      "zh": "前几个样本的训练 token（绿色：参与训练；灰色：label -100）"},
    "report": {"en": "Data report", "zh": "数据报告"},
    "rejected_rows": {"en": "Rejected and dropped rows", "zh": "被拒绝和丢弃的行"},
    "none": {"en": "none", "zh": "无"},
    "reason": {"en": "Reason", "zh": "原因"},
    "row": {"en": "Row", "zh": "行"},
    "file": {"en": "File", "zh": "文件"},
    "progress": {"en": "Progress", "zh": "进度"},
    "eta": {"en": "about {0} left", "zh": "预计还需 {0}"},
    "stop": {"en": "Stop", "zh": "停止"},
    "stop_help": {"en": "Finishes the current step, saves a checkpoint, then stops.",
                  "zh": "完成当前一步并保存检查点后停止。"},
    "resume": {"en": "Resume", "zh": "继续训练"},
    "log": {"en": "Log", "zh": "日志"},
    "loss": {"en": "Loss and eval loss", "zh": "Loss 与验证 loss"},
    "learning_rate": {"en": "Learning rate", "zh": "学习率"},
    "grad_norm": {"en": "Grad norm", "zh": "梯度范数"},
    "tokens_per_second": {"en": "Trained tokens/s", "zh": "训练 token/秒"},
    "config": {"en": "Config", "zh": "配置"},
    "chat_with": {"en": "Chat with this run", "zh": "与此模型对话"},
    "eval_this": {"en": "Evaluate this run", "zh": "评测此模型"},
    "export_this": {"en": "Export this run", "zh": "导出此模型"},
    "waiting": {"en": "Waiting for the first logged step…", "zh": "等待第一个记录的训练步…"},
    "check": {"en": "Check", "zh": "检查"},
    "data_file": {"en": "Data file", "zh": "数据文件"},
    "template": {"en": "Template", "zh": "模板"},
    "format": {"en": "Format", "zh": "格式"},
    "detected": {"en": "detected", "zh": "自动检测"},
    "max_length": {"en": "Max length", "zh": "最大长度"},
    "clusters": {"en": "Semantic clusters (slower)", "zh": "语义聚类（较慢）"},
    "working": {"en": "Working…", "zh": "处理中…"},
    "mask_view": {"en": "Trained tokens", "zh": "训练 token"},
    "second_model": {"en": "Second model (optional)", "zh": "第二个模型（可选）"},
    "system_prompt": {"en": "System prompt", "zh": "系统提示词"},
    "temperature": {"en": "Temperature (empty = the model's own, 0 = greedy)", "zh": "温度（留空 = 模型自带设置，0 = 贪心解码）"},
    "max_new_tokens": {"en": "Max new tokens", "zh": "最大生成 token 数"},
    "send": {"en": "Send", "zh": "发送"},
    "clear": {"en": "Clear", "zh": "清空"},
    "message": {"en": "Message", "zh": "消息"},
    "eval_run": {"en": "Run to evaluate", "zh": "要评测的任务"},
    "eval_data": {"en": "Held-out data", "zh": "留出数据"},
    "baseline": {"en": "Baseline (before/after)", "zh": "基线模型（前后对比）"},
    "limit": {"en": "Only the first N rows", "zh": "只用前 N 行"},
    "judge_url": {"en": "Judge endpoint (optional, OpenAI-compatible)", "zh": "评审模型地址（可选，OpenAI 兼容）"},
    "judge_model": {"en": "Judge model", "zh": "评审模型名称"},
    "run_eval": {"en": "Run eval", "zh": "开始评测"},
    "summary": {"en": "Summary", "zh": "汇总"},
    "metric": {"en": "Metric", "zh": "指标"},
    "responses": {"en": "Responses", "zh": "模型回答"},
    "prompt": {"en": "Prompt", "zh": "提示"},
    "reference": {"en": "Reference", "zh": "参考答案"},
    "response": {"en": "Response", "zh": "回答"},
    "score": {"en": "Score", "zh": "分数"},
    "no_finished": {"en": "No finished run yet.", "zh": "还没有已完成的任务。"},
    "login": {"en": "This UI needs its key", "zh": "此界面需要密钥"},
    "login_help": {"en": "Paste the key it was started with (--api-key-file or $SFTLAB_API_KEY).",
                   "zh": "请输入启动时设置的密钥（--api-key-file 或 $SFTLAB_API_KEY）。"},
    "key": {"en": "Key", "zh": "密钥"},
    "enter": {"en": "Enter", "zh": "进入"},
    "wrong_key": {"en": "Wrong key.", "zh": "密钥错误。"},
    "base_model": {"en": "the default model", "zh": "默认模型"},
    "stages": {"en": "Stages", "zh": "阶段"},
    "checkpoints": {"en": "Checkpoints", "zh": "检查点"},
    "started_by_cli": {"en": "started from the command line", "zh": "由命令行启动"},
    "export_out": {"en": "Output folder", "zh": "输出目录"},
    "run_export": {"en": "Export", "zh": "导出"},
    "export_format": {"en": "Format", "zh": "格式"},
    "export_quant": {"en": "Quantisation (GGUF)", "zh": "量化（GGUF）"},
    "export_verify": {"en": "Verify", "zh": "校验"},
    "export_verify_help": {"en": "read back, and compared with llama.cpp where installed (minutes for a real model)",
                           "zh": "回读校验，并在已安装 llama.cpp 时与其逐词比对（真实模型需数分钟）"},
    "export_result": {"en": "Result and verification", "zh": "结果与校验"},
}

# The Chinese help of the config keys (the English is each key's description in sftlab/config/train.py).
FIELD_HELP: dict[str, str] = {
    "model": "模型目录、.gguf 文件，或默认模型 smollm2-135m-instruct",
    "datasets": "训练数据：文件，以及混合多个文件时的权重（样本份额）。",
    "train_on": "训练哪些 token：所有助手回复、仅最后一轮回复，或全部 token。",
    "max_length": "样本截断到此 token 数（保留开头）；整个回答被截掉的样本会被丢弃并报告。",
    "on_error": "坏行让训练停止（raise），或被跳过并记录到 rejects.jsonl（skip）。",
    "method": "full（全参）、freeze、lora、dora、qlora（4 位基座上的 LoRA）、hybrid（先全参后 LoRA），或基于提示的方法。",
    "learning_rate": "默认：lora/dora 为 2e-4，full/freeze/hybrid 为 2e-5（写入 config.yaml）",
    "epochs": "数据遍历轮数（max_steps > 0 时以其为准）。",
    "max_steps": "优化器总步数；-1 表示由轮数决定。",
    "batch_size": "每个设备每个微步的样本数。",
    "grad_accum": "每个优化器步的梯度累积微步数。",
    "lora_r": "LoRA/DoRA 的秩。",
    "lora_alpha": "LoRA/DoRA 缩放系数（alpha / r）。",
    "lora_dropout": "适配器输入上的 dropout。",
    "lora_targets": "哪些线性层加适配器：all-linear，或模块名列表。",
    "freeze_trainable_layers": "freeze 方法：训练最上面的 N 层。",
    "hybrid_full_fraction": "hybrid 方法：LoRA 之前全参训练的步数比例。",
    "neftune_alpha": "NEFTune 嵌入噪声（论文常用 5）；留空为关闭。",
    "eval_split": "留作验证 loss 的样本比例。",
    "eval_datasets": "用于验证 loss 的留出文件（代替 eval_split）。",
    "eval_steps": "每 N 步验证一次（默认：每轮）。",
    "logging_steps": "每 N 步记录一次（第 1 步和最后一步总会记录）。",
    "save_total_limit": "训练中保留的检查点数量。",
    "seed": "数据顺序、划分与初始化的随机种子。",
    "precision": "auto：在支持且实测更快时用 bf16。",
    "template": "内置模板名或 .jinja 文件；默认：分词器自带的对话模板。",
    "default_system": "没有 system 消息的对话所用的系统提示词，替换模板自带的默认提示词（SmolLM2 的模板会给出 "
                      "\"You are a helpful AI assistant named SmolLM, trained by Hugging Face\"）；\"\" 表示去掉该默认。"
                      "它会写入保存模型的对话模板：训练后模型的 chat、serve、eval 也使用它。",
    "template_kwargs": "每次渲染模板时传入的参数（如 Qwen3 关闭思考模式的 {enable_thinking: false}，或模板读取的任何变量）："
                       "训练、inspect、data check，以及（写入保存的模板后）训练后模型的 chat、serve、eval 和 export 都会使用。",
    "train_reasoning": "是否训练回答中推理过程（<think>…</think>、reasoning_content）的 token；回答本身及其轮次结束 token 总会训练。",
    "escape_special_tokens": "数据中的特殊 token 文本（如消息里的 `<|im_end|>`）保持为普通文本；false：把它们当作控制 token，"
                             "用于有意携带控制 token 的数据。",
    "packing": "先把整个数据集打包成长度为 max_length 的行，每个打包行算一个批次成员（优化步数会变少；TRL 的名称）。",
    "limit": "只用前 N 条对话（快速试跑），在 `clean` 和数据混合之后计数：即前 N 条会被训练的对话。",
    "mixture_examples": "按 `weight`（样本份额）混合多个数据集时，样本总数（默认：读到的行数）。",
    "mixture_replacement": "按 `weight` 混合数据集时，每个样本有放回地抽取（默认：一个文件的所有行用完后才重复）。",
    "clean": "训练前删除这些数据检查（`sftlab data check` 的检查名）标出的行；被删的行列在 data_report.json 中。",
    "num_proc": "编码：对 2,000 条及以上的输入使用的工作进程数（默认：每核一个，最多 8 个）。",
    "template_tokens": "自定义 .jinja 模板写出的标记（如 [\"<|user|>\", \"<|end|>\"]）；分词器中不是单个 token 的，"
                       "会作为新的特殊 token 加入并训练。内置模板知道自己的标记。",
    "padding_free": "批次布局（TRL 的名称）：一个批次的样本首尾相接放在一行，不填充，样本之间不互相注意；batch_size 仍按样本计数。",
    "encode_cache": "把编码好的样本保存在 $SFTLAB_HOME/encoded，重新运行或续训时无需再次编码。",
    "task": "模型学什么：sft（学会回答），或在其上加任务头（docs/heads.md）：classification（对数据标签做 softmax；"
            "行为 {text 或对话, label}）或 reward（每个回答一个分数；行为 {prompt 或 messages, chosen, rejected}，成对损失）。",
    "class_weights": "task 为 classification 时各标签的损失权重：\"balanced\"（行数 / (标签数 × 该标签行数)）或 {标签: 权重}。",
    "num_virtual_tokens": "prompt_tuning / prefix_tuning / p_tuning（peft）：每个样本前训练的虚拟 token 数；adaption_prompt"
                          "（LLaMA-Adapter）：在最上面 `adaption_layers` 层中，经零初始化门控被注意的可训练提示 token 数。",
    "adaption_layers": "adaption_prompt：获得提示 token 的最上面几层。",
    "prompt_init_text": "prompt_tuning：用这段文本的嵌入初始化虚拟 token。",
    "freeze_train_embeddings": "freeze 方法：同时训练输入嵌入和输出头。",
    "hybrid_lora_learning_rate": "hybrid 方法：LoRA 阶段的学习率（默认：learning_rate 的 10 倍）。",
    "lr_scheduler": "transformers 的学习率调度器名称。",
    "warmup_ratio": "学习率预热所占的步数比例。",
    "weight_decay": "AdamW 的权重衰减。",
    "max_grad_norm": "梯度裁剪到此范数（0：不裁剪）。",
    "gradient_checkpointing": "反向传播时重新计算激活值（fsdp2 下用 FSDP 自己的激活检查点）。",
    "micro_batch_tokens": "每次前向/反向最多处理这么多 token（批次的行依次处理，梯度累加）：损失和更新与整批一次处理相同，"
                          "激活内存只占一小部分。",
    "save_steps": "每 N 步保存一个检查点（默认：每轮一次）。",
    "keep_checkpoints": "训练完成后 checkpoint-N/ 保留多少（它们用于续训；全参数微调的检查点含模型和优化器状态，"
                        "每个约为模型的 3 倍大）：all（按 save_total_limit 保留的全部）、last、none。",
    "resume": "true：从 output_dir 的最后一个检查点继续；或指定一个检查点目录。",
    "output_dir": "本次运行的目录。",
    "stages": "分阶段训练：每项是覆盖上面各键的部分配置（datasets、method、epochs、learning_rate、train_on …，"
              "可选 name）；第 k 阶段从第 k-1 阶段的模型开始，写入 output_dir/<name>。",
    "merge_lora_stages": "lora/dora 阶段后接另一个 lora/dora 阶段时：false 表示在下一阶段继续训练同一个适配器，而不是先合并进模型。",
    "report_to": "指标还要发送到哪里：none、tensorboard、wandb …（transformers 的名称）。",
    "distributed": "torchrun / accelerate launch 启动的多个进程如何分工：strategy（ddp、fsdp2、deepspeed）、"
                   "cpu_offload（fsdp2）、deepspeed（其 JSON 配置）（docs/distributed.md）。",
}

GROUPS = {"What to train": "训练什么", "How": "怎么训练", "Optimisation": "优化", "Evaluation": "验证",
          "Bookkeeping": "记录与保存"}


def translator(lang: str):
    """t(key) for the templates: the text in `lang`, English where a translation is missing, the key itself where
    there is no such text."""
    lang = lang if lang in LANGUAGES else "en"

    def t(key: str, *args: object) -> str:
        entry = TEXT.get(key)
        text = key if entry is None else entry.get(lang) or entry["en"]
        return text.format(*args) if args else text

    return t


def field_help(name: str, description: str, lang: str) -> str:
    """A config key's help in `lang`: its description, or in Chinese its translation where there is one."""
    return (FIELD_HELP.get(name) if lang == "zh" else None) or description


def group_title(title: str, lang: str) -> str:
    return GROUPS.get(title, title) if lang == "zh" else title
