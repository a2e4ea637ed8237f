"""Everything the bot says, in English and Chinese, and the clean-up of the backend's GUI wording."""

from __future__ import annotations

import re

from bot.nemo.errors import accepted_formats_text

_TEXTS: dict[str, tuple[str, str]] = {
    "start": (
        "👋 Hi! I edit videos for you.\n"
        "Send me clips or images, then tell me what you want — for example "
        "\"cut the pauses, add background music, and generate captions\" or \"make it 9:16\".\n"
        "Say \"export\" (or /export) when you want the video.\n\n{commands}",
        "👋 你好！我可以帮你剪辑视频。\n"
        "先发给我视频或图片，再告诉我你想怎么改——例如“去掉停顿，加背景音乐，生成字幕”或“改成 9:16”。\n"
        "想要成片时说“导出”（或 /export）。\n\n{commands}",
    ),
    "commands": (
        "/new — start a new project\n/export — render and send the video\n/status — show the timeline\n"
        "/credits — your credits\n/cancel — stop waiting for the current job\n/help — this help",
        "/new — 新建项目\n/export — 导出并发送视频\n/status — 查看时间线\n/credits — 查看积分\n"
        "/cancel — 取消当前任务\n/help — 帮助",
    ),
    "queued": (
        "⏳ Working on your last request; this one is next.",
        "⏳ 正在处理你的上一个请求，这条排在下一个。",
    ),
    "busy": ("⏳ Working on it…", "⏳ 正在处理…"),
    "still_working": ("⏳ Still working… ({elapsed} so far)", "⏳ 仍在处理…（已 {elapsed}）"),
    "uploading": ("📤 Uploading {count} file(s)…", "📤 正在上传 {count} 个文件…"),
    "uploaded": (
        "✅ Got {names}. Tell me what to do with it, or say \"export\".",
        "✅ 已收到 {names}。告诉我要怎么剪，或者说“导出”。",
    ),
    "uploaded_short": ("✅ Uploaded {names}.", "✅ 已上传 {names}。"),
    "thinking": ("✏️ Editing…", "✏️ 正在编辑…"),
    "done_changes": ("✅ Done: {changes}.", "✅ 完成：{changes}。"),
    "done_nothing": (
        "✅ Done. The timeline did not change; try saying it another way, or /status to see it.",
        "✅ 完成，但时间线没有变化；换个说法试试，或用 /status 查看。",
    ),
    "export_empty": (
        "There is nothing to export yet: send a clip first, then tell me what to do with it.",
        "还没有可导出的内容：请先发送一个视频片段。",
    ),
    "export_started": ("🎬 Exporting… 0%", "🎬 正在导出… 0%"),
    "export_progress": ("🎬 Exporting… {progress}%", "🎬 正在导出… {progress}%"),
    "export_done": ("✅ Your video is ready: {url}", "✅ 视频已完成：{url}"),
    "export_link_only": (
        "✅ Your video is ready ({size}, too large to send here): {url}",
        "✅ 视频已完成（{size}，超过这里的发送上限）：{url}",
    ),
    "export_caption": ("Your video ✨", "你的视频 ✨"),
    "export_resumed": ("🎬 Picking up your export from before the restart…", "🎬 继续处理重启前的导出…"),
    "export_failed": ("❌ The export failed: {reason}", "❌ 导出失败：{reason}"),
    "export_lost": (
        "NemoVideo no longer knows this export; please export again", "NemoVideo 已找不到这次导出，请重新导出"
    ),
    "export_timeout": (
        "❌ The export is taking far too long; I stopped waiting. Try /export again later.",
        "❌ 导出时间过长，已停止等待。请稍后再试 /export。",
    ),
    "cancelled": ("🛑 Cancelled.", "🛑 已取消。"),
    "nothing_to_cancel": ("Nothing is running right now.", "当前没有进行中的任务。"),
    "new_session": ("🆕 New project started. Send me clips to begin.", "🆕 已新建项目，发送视频开始吧。"),
    "credits": (
        "💳 Credits: {available} available, {frozen} reserved, {total} in all.",
        "💳 积分：可用 {available}，冻结 {frozen}，共 {total}。",
    ),
    "status_empty": ("Your timeline is empty: send a clip to begin.", "时间线是空的：发送视频开始吧。"),
    "unsupported_file": (
        "I can't use {name}. Accepted formats: {formats}.",
        "无法使用 {name}。支持的格式：{formats}。",
    ),
    "file_too_large": (
        "{name} is {size}; the limit is {limit}. Trim or compress it, or send a link to it.",
        "{name} 大小为 {size}，上限是 {limit}。请裁剪或压缩，或发送链接。",
    ),
    "telegram_too_big": (
        "{name} is {size}, and Telegram lets bots download at most {limit}. Send a link to the file instead, "
        "trim it or send it compressed, or run the bot with a local Bot API server (no limit).",
        "{name} 大小为 {size}，Telegram 只允许机器人下载不超过 {limit} 的文件。请改为发送文件链接、裁剪或压缩后再发，"
        "或使用本地 Bot API 服务器运行机器人（无此限制）。",
    ),
    "discord_channel_not_allowed": (
        "I don't work in this channel; ask a moderator where I'm enabled.", "我未在此频道启用，请询问管理员。"
    ),
    "discord_cooldown": ("Easy there — try again in {seconds} s.", "请稍等 {seconds} 秒再试。"),
    "discord_reel_not_moderator": (
        "Only moderators can make highlight reels (Manage Messages, or a moderator role).",
        "只有管理员可以制作精彩集锦（需要“管理消息”权限或管理员角色）。",
    ),
    "discord_reel_no_channel": ("Pick a text channel for the reel.", "请选择一个文字频道。"),
    "discord_reel_bad_since": (
        "I don't understand since: {since}. Use 24h, 7d, 30m or a date like 2026-11-01.",
        "无法理解 since：{since}。请用 24h、7d、30m 或 2026-11-01 这样的日期。",
    ),
    "discord_reel_empty": (
        "No video or image clips in the last {count} messages of {channel}, nor any marked with “Add to reel”.",
        "{channel} 最近 {count} 条消息里没有视频或图片，也没有用“Add to reel”标记的片段。",
    ),
    "discord_reel_credits": (
        "🎬 Highlight reel of {channel} — clips by {authors}", "🎬 {channel} 精彩集锦——素材来自 {authors}"
    ),
    "discord_pick_no_clip": ("That message has no video or image.", "这条消息里没有视频或图片。"),
    "discord_picked": (
        "Added to the reel ({count} marked in this channel). Run /reel to make it.",
        "已加入集锦（本频道已标记 {count} 条）。使用 /reel 生成。",
    ),
    "session_lost": (
        "⚠️ Your previous project expired on NemoVideo, so its timeline is gone. I started a new one: "
        "please send your clips again.",
        "⚠️ 之前的项目在 NemoVideo 上已失效，时间线无法恢复。已为你新建项目，请重新发送视频。",
    ),
    "out_of_credits": (
        "💳 You're out of credits. Register to get more and keep your work: {link}",
        "💳 积分已用完。注册以获取更多积分并保留作品：{link}",
    ),
    "out_of_credits_shared": (
        "💳 This bot's NemoVideo account is out of credits. Please tell the bot's operator.",
        "💳 本机器人的 NemoVideo 账户积分已用完，请联系管理员。",
    ),
    "export_blocked": (
        "🚫 Export isn't available on this NemoVideo plan. It's not about credits: the plan needs an upgrade.",
        "🚫 当前 NemoVideo 套餐不支持导出（与积分无关），需要升级套餐。",
    ),
    "rate_limited": (
        "🐢 NemoVideo is busy right now. Please try again in a minute.",
        "🐢 NemoVideo 当前繁忙，请一分钟后再试。",
    ),
    "backend_down": (
        "📡 I can't reach NemoVideo right now. Please try again shortly.",
        "📡 暂时无法连接 NemoVideo，请稍后再试。",
    ),
    "stream_interrupted": (
        "📡 The connection dropped while NemoVideo was working. I did not resend your message (that would "
        "charge twice); I'm checking what it did…",
        "📡 处理时连接中断。为避免重复扣费，我没有重发你的消息，正在检查处理结果…",
    ),
    "stream_timeout": (
        "⌛ NemoVideo did not finish in time. Your message was not resent; check /status, then try again.",
        "⌛ NemoVideo 未能及时完成。消息没有重发；请用 /status 查看后再试。",
    ),
    "backend_error": (
        "❌ NemoVideo could not do that: {reason}",
        "❌ NemoVideo 无法完成：{reason}",
    ),
    "token_refused": (
        "🔑 NemoVideo refused this bot's credentials. Please tell the bot's operator.",
        "🔑 NemoVideo 拒绝了本机器人的凭据，请联系管理员。",
    ),
    "internal_error": (
        "❌ Something went wrong on my side. Your request was not lost; please try again.",
        "❌ 我这边出了点问题。请求没有丢失，请重试。",
    ),
    "claim": ("🔗 Open this project on nemovideo.com: {link}", "🔗 在 nemovideo.com 打开此项目：{link}"),
    "generating": ("🎞️ Generating video…", "🎞️ 正在生成视频…"),
    "adding_music": ("🎵 Adding music…", "🎵 正在添加音乐…"),
    "editing": ("✂️ Editing the timeline…", "✂️ 正在编辑时间线…"),
    "captioning": ("💬 Adding captions…", "💬 正在添加字幕…"),
    "analyzing": ("🔍 Looking at your clips…", "🔍 正在分析你的视频…"),
    "working_on_it": ("⚙️ Working…", "⚙️ 处理中…"),
}

BUTTON_LABELS: dict[str, tuple[str, str]] = {
    "/export": ("🎬 Export", "🎬 导出"),
    "/status": ("📋 Status", "📋 状态"),
    "/credits": ("💳 Credits", "💳 积分"),
    "/new": ("🆕 New", "🆕 新建"),
}


def t(key: str, lang: str, **values: object) -> str:
    en, zh = _TEXTS[key]
    template = zh if lang == "zh" else en
    if key in ("start", "help"):
        values.setdefault("commands", t("commands", lang))
    if key == "unsupported_file":
        values.setdefault("formats", accepted_formats_text())
    return template.format(**values)


def tool_label(tool: str, lang: str) -> str:
    """A progress label for an agent tool; tool names themselves are never shown."""
    name = tool.lower()
    if name.startswith("generate_video") or "seedance" in name or "kling" in name:
        return t("generating", lang)
    if "music" in name or "suno" in name or "audio" in name:
        return t("adding_music", lang)
    if "caption" in name or "subtitle" in name:
        return t("captioning", lang)
    if "analy" in name or "understand" in name:
        return t("analyzing", lang)
    if "edit" in name or "multitrack" in name or "trim" in name or "cut" in name:
        return t("editing", lang)
    return t("working_on_it", lang)


# The backend assumes a GUI; a chat user has commands instead (nemo-api.md, "Behaviour the skill documents").
_GUI_REWRITES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"\b(click|tap|press|hit)( on)? (the )?[\"“']?export[\"”']?( button)?", re.I),
     "say \"export\" (or /export)", "说“导出”（或 /export）"),
    (re.compile(r"\b(click|tap|press)( on)? (the )?[\"“']?download[\"”']?( button)?", re.I),
     "say \"export\" (or /export)", "说“导出”（或 /export）"),
    (re.compile(r"\b(preview|check|view|see)( it| them| the result| your video)? in the (timeline|editor|preview"
                r"(?: panel| window)?)", re.I),
     "use /status to see the timeline", "用 /status 查看时间线"),
    (re.compile(r"\b(open|check) the (timeline|editor|panel|sidebar|settings|media library)( panel)?", re.I),
     "use /status", "用 /status"),
    (re.compile(r"\bdrag( and drop)? (the |your )?(clips?|files?|videos?|images?)"
                r"(\s+(into|onto|to|in)\s+(the\s+)?(timeline|editor|canvas|upload area))?", re.I),
     "send the clips here", "直接把视频发到这里"),
    (re.compile(r"点击(“|\")?导出(”|\")?(按钮)?"), "", "说“导出”（或 /export）"),
    (re.compile(r"在时间线(中|里|上)?预览"), "", "用 /status 查看时间线"),
    (re.compile(r"拖(动|拽)(视频|片段|文件)?到(时间线|画布)(上|中)?"), "", "直接把视频发到这里"),
]
_TEMPORARY_NOISE = re.compile(r"\bI (?:have )?encountered a temporary issue\b", re.I)


def clean_backend_text(text: str, lang: str) -> str:
    """The backend's words with GUI instructions turned into what a chat user can do."""
    out = text
    for pattern, en, zh in _GUI_REWRITES:
        replacement = zh if (lang == "zh" or not en) else en

        def swap(match: re.Match[str], replacement: str = replacement) -> str:
            before = match.string[: match.start()].rstrip()
            at_sentence_start = not before or before[-1] in ".!?:\n"
            return replacement[:1].upper() + replacement[1:] if at_sentence_start else replacement

        out = pattern.sub(swap, out)
    return out.strip()


def is_trailing_noise(text: str) -> bool:
    """"I encountered a temporary issue" after a normal reply is noise (nemo-api.md)."""
    return bool(_TEMPORARY_NOISE.search(text)) and len(text) < 200
