"""Everything the bot says, in English and Chinese, and the clean-up of the backend's GUI wording."""

from __future__ import annotations

import re
from typing import Literal

from bot.nemo.errors import accepted_formats_text

# Which backend the bot speaks of: the hosted NemoVideo, or the localnemo embedded by ``--local`` (then no
# message names NemoVideo: "the local editor"). The composition root says which (bot.engine.Engine).
Backend = Literal["hosted", "local"]

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
        "Nothing changed: the timeline is as it was. Try saying it another way, or /status to see it.",
        "没有任何变化：时间线和之前一样。换个说法试试，或用 /status 查看。",
    ),
    "export_empty": (
        "There is nothing to export yet: send a clip first, then tell me what to do with it.",
        "还没有可导出的内容：请先发送一个视频片段。",
    ),
    "export_started": ("🎬 Exporting… 0%", "🎬 正在导出… 0%"),
    "export_progress": ("🎬 Exporting… {progress}%", "🎬 正在导出… {progress}%"),
    "export_queued": ("🎬 Queued for export ({ahead} ahead)…", "🎬 排队等待导出（前面还有 {ahead} 个）…"),
    "export_queued_next": ("🎬 Queued for export (next in line)…", "🎬 排队等待导出（下一个就是你）…"),
    "export_done": ("✅ Your video is ready: {url}", "✅ 视频已完成：{url}"),
    # The embedded editor's link is on this machine's loopback and dies with the process: the file is it.
    "export_done_file": ("✅ Your video is ready.", "✅ 视频已完成。"),
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
    "export_timeout_cancelled": (
        "❌ The export is taking far too long: I stopped waiting and cancelled it. Try /export again later.",
        "❌ 导出时间过长：已停止等待并取消了这次导出。请稍后再试 /export。",
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
    "reel_empty": (
        "No video or image clips in the last {count} messages of {channel}, nor any marked with “Add to reel”.",
        "{channel} 最近 {count} 条消息里没有视频或图片，也没有用“Add to reel”标记的片段。",
    ),
    "reel_credits": (
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
    "reason_unknown": ("an unexpected error on NemoVideo's side", "未知错误"),
    "elapsed_seconds": ("{n} s", "{n} 秒"),
    "elapsed_minutes": ("{n} min", "{n} 分钟"),
    "changes_joiner": ("; ", "；"),
}

# The terminal, the storyboard, CJK fonts and messages during an export (issue 11, points 4–7).
_TERMINAL_TEXTS: dict[str, tuple[str, str]] = {
    "storyboard_caption": (
        "🖼️ Your timeline: {n} shot(s) in order, with music, titles and captions below",
        "🖼️ 你的时间线：按顺序的 {n} 个画面，下方是音乐、标题和字幕",
    ),
    "in_next_export": (
        "🎬 An export is rendering right now: this change is not in it; it will be in your next export.",
        "🎬 正在导出的视频不包含这次修改；它会出现在下一次导出中。",
    ),
    "cjk_font_missing": (
        "⚠️ No Chinese font is installed on this machine, so that text would be drawn as empty boxes. Install "
        "one ({packages}; on Debian or Ubuntu: sudo apt-get install fonts-noto-cjk), then export.",
        "⚠️ 本机没有安装中文字体，这段文字会显示成空白方框。请先安装字体（{packages}；Debian/Ubuntu："
        "sudo apt-get install fonts-noto-cjk），再导出。",
    ),
    # The texts that name the backend, as said when it is the embedded localnemo ("key@local").
    "export_lost@local": (
        "the local editor no longer knows this export; please export again", "本地编辑器已找不到这次导出，请重新导出"
    ),
    "session_lost@local": (
        "⚠️ The local editor no longer has your previous project, so its timeline is gone. I started a new one: "
        "please send your clips again.",
        "⚠️ 本地编辑器里已没有之前的项目，时间线无法恢复。已为你新建项目，请重新发送视频。",
    ),
    "out_of_credits_shared@local": (
        "💳 The local editor's credits are used up. Please tell the bot's operator.",
        "💳 本地编辑器的积分已用完，请联系管理员。",
    ),
    "export_blocked@local": ("🚫 The local editor refused to export.", "🚫 本地编辑器拒绝了导出。"),
    "rate_limited@local": (
        "🐢 The local editor is busy right now. Please try again in a minute.",
        "🐢 本地编辑器当前繁忙，请一分钟后再试。",
    ),
    "backend_down@local": (
        "📡 I can't reach the local editor right now. Please try again shortly.",
        "📡 暂时无法连接本地编辑器，请稍后再试。",
    ),
    "stream_interrupted@local": (
        "📡 The connection dropped while the local editor was working. I did not resend your message; I'm "
        "checking what it did…",
        "📡 本地编辑器处理时连接中断。我没有重发你的消息，正在检查处理结果…",
    ),
    "stream_timeout@local": (
        "⌛ The local editor did not finish in time. Your message was not resent; check /status, then try again.",
        "⌛ 本地编辑器未能及时完成。消息没有重发；请用 /status 查看后再试。",
    ),
    "backend_error@local": ("❌ The local editor could not do that: {reason}", "❌ 本地编辑器无法完成：{reason}"),
    "token_refused@local": (
        "🔑 The local editor refused this bot's credentials. Please tell the bot's operator.",
        "🔑 本地编辑器拒绝了本机器人的凭据，请联系管理员。",
    ),
    "reason_unknown@local": ("an unexpected error in the local editor", "未知错误"),
}

BUTTON_LABELS: dict[str, tuple[str, str]] = {
    "/export": ("🎬 Export", "🎬 导出"),
    "/status": ("📋 Status", "📋 状态"),
    "/credits": ("💳 Credits", "💳 积分"),
    "/new": ("🆕 New", "🆕 新建"),
}


def backend_text(key: str, lang: str, backend: Backend, **values: object) -> str:
    """A text that names the backend, worded for it: the embedded localnemo is "the local editor"."""
    local = f"{key}@local"
    return t(local if backend == "local" and local in _CATALOGUE else key, lang, **values)


def t(key: str, lang: str, **values: object) -> str:
    en, zh = _CATALOGUE[key]
    template = zh if lang == "zh" else en
    if key in ("start", "help"):
        values.setdefault("commands", t("commands", lang))
    if key == "unsupported_file":
        values.setdefault("formats", accepted_formats_text())
    return template.format(**values)


def tool_label(tool: str, lang: str, progress: int | None = None) -> str:
    """A progress label for an agent tool; tool names themselves are never shown."""
    name = tool.lower()
    if name.startswith("generate_video") or "seedance" in name or "kling" in name:
        return t("generating", lang)
    if "music" in name or "suno" in name or "audio" in name:
        return t("adding_music", lang)
    if "caption" in name or "subtitle" in name:
        return t("transcribing", lang, percent=progress) if progress is not None else t("captioning", lang)
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


# -- the timeline in words (bot/nemo/draft.py) and localnemo's agent ------------------------------------------
# Kept apart from _TEXTS so that each block has one owner; t() looks all of them up. Keys are prefixed with
# the part that says them.

_DRAFT_TEXTS: dict[str, tuple[str, str]] = {
    "draft.span": ("{a}–{b} s", "{a}–{b} 秒"),
    "draft.Video": ("Video", "视频"),
    "draft.Music": ("Music", "音乐"),
    "draft.Audio": ("Audio", "音频"),
    "draft.Title": ("Title", "标题"),
    "draft.Captions": ("Captions", "字幕"),
    "draft.Track": ("Track", "轨道"),
    "draft.clips": ("{n} clips", "{n} 个片段"),
    "draft.lines": ("{n} lines", "{n} 行"),
    "draft.type": ("type {n}", "类型 {n}"),
    "draft.quoted": ('"{name}"', "“{name}”"),
    "draft.track_named": ("{kind}: {name} ({details})", "{kind}：{name}（{details}）"),
    "draft.track_unnamed": ("{kind} ({details})", "{kind}（{details}）"),
    "draft.details_joiner": (", ", "，"),
    "draft.empty": ("Timeline: empty", "时间线：空"),
    "draft.timeline_one": ("Timeline ({n} track): ", "时间线（{n} 条轨道）："),
    "draft.timeline": ("Timeline ({n} tracks): ", "时间线（{n} 条轨道）："),
    "draft.added_title": ("added the title '{name}' ({span})", "添加了标题“{name}”（{span}）"),
    "draft.added_untitled": ("added a title ({span})", "添加了标题（{span}）"),
    "draft.added_captions": ("added captions ({n} lines, {span})", "添加了字幕（{n} 行，{span}）"),
    "draft.added_track": ("added a {kind} track {span}", "添加了{kind}轨道 {span}"),
    "draft.title_now": ("title now '{name}'", "标题改为“{name}”"),
    "draft.captions_now": ("captions now {n} lines (were {m})", "字幕现为 {n} 行（原 {m} 行）"),
    "draft.clips_now": ("video now has {n} clips (was {m})", "视频现有 {n} 个片段（原 {m} 个）"),
    "draft.named_now": ("{noun} now '{name}'", "{noun}改为“{name}”"),
    "draft.span_now": ("{noun} now {span} (was {old})", "{noun}现为 {span}（原 {old}）"),
    "draft.title_shown": ("title now shown {span}", "标题显示时间改为 {span}"),
    "draft.volume_now": ("{noun} volume now {p}%", "{noun}音量改为 {p}%"),
    "draft.removed": ("removed the {noun}", "删除了{noun}"),
    "draft.removed_track": ("removed the {noun} track", "删除了{noun}轨道"),
    "draft.frame_now": ("frame now {w}×{h}", "画面改为 {w}×{h}"),
    "draft.output_now": ("output now {v}", "输出改为 {v}"),
    "draft.aspect_now": ("aspect ratio now {v}", "画面比例改为 {v}"),
    "draft.updated": ("the timeline was updated", "时间线已更新"),
}

# localnemo's agent imitates the hosted one, GUI phrases included (agent.gui_*): the bot's clean-up above
# must turn them into chat commands, and the end-to-end tests check that it does.
_AGENT_TEXTS: dict[str, tuple[str, str]] = {
    "agent.gui_export": ("Click the Export button when you're ready to download.", "准备好后点击导出按钮即可下载。"),
    "agent.gui_preview": ("You can preview it in the timeline.", "你可以在时间线中预览。"),
    "agent.looking": ("Let me look at your clip.", "我来看看你的视频。"),
    "agent.speed_out_of_range": (
        "I can play the video from {low:g}× to {high:g}× speed; {factor:g}× is outside that range, so I left the "
        "speed as it was.",
        "播放速度可以在 {low:g}× 到 {high:g}× 之间；{factor:g}× 超出范围，速度未改变。",
    ),
    "agent.no_footage": (
        "I can't generate footage here: this offline editor has no video generation model, so it can only edit "
        "what you send. Upload your own clips and I'll edit them (cut pauses, trim, music, titles, captions from "
        "an .srt file, aspect ratio, speed, fades, resolution).",
        "这里无法生成视频素材：这个离线剪辑器没有视频生成模型，只能剪辑你发来的素材。你可以上传自己的素材，我来帮你剪辑"
        "（去停顿、裁剪、音乐、标题、.srt 字幕、画幅比例、变速、淡入淡出、分辨率）。",
    ),
    "agent.no_video_for_pauses": (
        "There is no video on the timeline yet, so there are no pauses to remove.",
        "时间线上还没有视频，没有可以去掉的停顿。",
    ),
    "agent.no_sound": (
        "The video has no sound, so there are no pauses I can find in it.",
        "视频没有声音，无法检测停顿。",
    ),
    "agent.no_speech": (
        "I found no speech in the clip's sound to keep, so I left it as it is.",
        "视频的声音里没有检测到说话，保持原样。",
    ),
    "agent.no_pauses": ("I found no pauses longer than {seconds} s to cut.", "没有找到超过 {seconds} 秒的停顿。"),
    "agent.pauses_cut": (
        "Done! I removed {removed} s of pauses: the video is now {after} s instead of {before} s, in {pieces} "
        "pieces. {gui}",
        "完成！已去掉 {removed} 秒的停顿：视频从 {before} 秒变为 {after} 秒，共 {pieces} 段。{gui}",
    ),
    "agent.nothing_to_trim": ("There is no video on the timeline to trim yet.", "时间线上还没有可以裁剪的视频。"),
    "agent.trim_outside": (
        "The video is only {length} s long, so there is nothing in that part; I left it as it is.",
        "视频只有 {length} 秒，那一段不存在，保持原样。",
    ),
    "agent.trim_keeps_all": (
        "The video is {length} s long, so that keeps all of it.",
        "视频共 {length} 秒，全部保留。",
    ),
    "agent.trimmed": (
        "I kept {shown} of the video: it is now {after} s long (was {length} s).",
        "已保留视频的 {shown}：现在长 {after} 秒（原来 {length} 秒）。",
    ),
    "agent.one_clip": (
        "There is only one clip on the timeline; upload more and they play one after another.",
        "时间线上只有一个素材；上传更多素材后会按顺序播放。",
    ),
    "agent.joined": (
        "The {n} clips play one after another, in the order you sent them ({length} s in all).",
        "{n} 个素材按上传顺序依次播放（共 {length} 秒）。",
    ),
    "agent.no_images": (
        "There are no images on the timeline for a slideshow yet.",
        "时间线上还没有可以做幻灯片的图片。",
    ),
    "agent.slideshow": (
        "The {n} images play as a slideshow, {each} s each ({length} s in all).",
        "{n} 张图片做成幻灯片，每张 {each} 秒（共 {length} 秒）。",
    ),
    "agent.no_video_for_speed": (
        "There is no video on the timeline to speed up or slow down yet.",
        "时间线上还没有可以变速的视频。",
    ),
    "agent.speed": (
        "The video now plays at {factor:g}× speed ({after} s, was {before} s).",
        "视频现在以 {factor:g}× 速度播放（{after} 秒，原来 {before} 秒）。",
    ),
    "agent.no_music_yet": (
        'There is no music on the timeline yet, so nothing changed (no credit used). Say "add music" to add some.',
        "时间线上还没有音乐，所以没有做任何修改（没有扣积分）。说「加背景音乐」即可添加。",
    ),
    "agent.no_clip_sound": ("There is no clip with sound on the timeline yet.", "时间线上还没有带声音的视频。"),
    "agent.music_volume": ("The music is now at {percent}% volume.", "音乐音量已设为 {percent}%。"),
    "agent.muted": ("The clip's own sound is now muted.", "视频原声已静音。"),
    "agent.clip_volume": ("The clip's own sound is now at {percent}% volume.", "视频原声音量已设为 {percent}%。"),
    "agent.music_yours": ('"{title}", the track you sent,', "你上传的「{title}」"),
    "agent.music_bundled": ("the built-in music loop", "内置的背景音乐"),
    "agent.music_ducks": (" It dips by about 12 dB while someone speaks.", "有人说话时音乐会自动降低约 12 dB。"),
    "agent.music_added": (
        "I added background music ({which}) over the whole video ({length} s) at {percent}% volume.{ducking} {gui}",
        "已为整段视频（{length} 秒）添加背景音乐（{which}），音量 {percent}%。{ducking}{gui}",
    ),
    "agent.no_music": ("There is no music on the timeline.", "时间线上没有音乐。"),
    "agent.music_removed": ("I removed the background music.", "已去掉背景音乐。"),
    "agent.title": (
        'I added the title "{text}" for the first {seconds} seconds.',
        "已添加标题「{text}」，显示前 {seconds} 秒。",
    ),
    "agent.text": (
        'I put the text "{text}" on the video from {start} to {end}.',
        "已在 {start}–{end} 添加文字「{text}」。",
    ),
    "agent.no_captions": ("There are no captions on the timeline.", "时间线上没有字幕。"),
    "agent.captions_removed": ("I removed the captions ({n} lines).", "已去掉字幕（{n} 行）。"),
    "agent.captions_unreadable": ("I couldn't read the captions file: {error}.", "无法读取字幕文件：{error}。"),
    # Stands in for an upload without a file name; the Chinese reply has always named it in English.
    "agent.captions_file": ("the captions file", "the captions file"),
    "agent.caption_placed": (
        "I put the {n} caption from {name} on the video; they are burned in when you export.{cut}",
        "已把 {name} 中的 {n} 条字幕加到视频上，导出时会烧录进画面。{cut}",
    ),
    "agent.captions_placed": (
        "I put the {n} captions from {name} on the video; they are burned in when you export.{cut}",
        "已把 {name} 中的 {n} 条字幕加到视频上，导出时会烧录进画面。{cut}",
    ),
    "agent.captions_cut": (" ({n} fall in parts that were cut.)", "（{n} 条位于已剪掉的部分。）"),
    "agent.fit_blur": ("clips of another shape sit on a blurred copy of themselves", "其他比例的画面会放在模糊背景上"),
    "agent.fit_crop": ("clips of another shape are cropped to fill it", "其他比例的画面会裁剪填满"),
    "agent.fit_pad": ("clips of another shape get black bars", "其他比例的画面会加黑边"),
    "agent.fit_from_now": ("From now on {fit}.", "之后{fit}。"),
    "agent.canvas": (
        "The canvas is now {ratio} ({width}×{height}); {fit}.",
        "画布已改为 {ratio}（{width}×{height}），{fit}。",
    ),
    "agent.fades_in": ("fades in over {seconds} s", "开头 {seconds} 秒淡入"),
    "agent.fades_out": ("fades out over {seconds} s", "结尾 {seconds} 秒淡出"),
    "agent.fades_joiner": (" and ", "，"),
    "agent.fades": ("The video {parts} (picture and sound).", "视频{parts}（画面和声音）。"),
    "agent.resolution": ("The export resolution is now {name}.", "导出分辨率已设为 {name}。"),
}

_CATALOGUE: dict[str, tuple[str, str]] = {**_TEXTS, **_TERMINAL_TEXTS, **_DRAFT_TEXTS, **_AGENT_TEXTS}


# localnemo's offline agent: what it can do (for "help" and for "not understood", one example each), and
# its answers to "undo", "redo", "start over" and to a request that changed nothing.
_UNDERSTANDING_TEXTS: dict[str, tuple[str, str]] = {
    "agent.can_pauses": ('cut pauses — "cut the pauses" (or "tight", "gentle")', "去掉停顿 ——「去掉停顿」"),
    "agent.can_trim": ('trim — "keep the first 30 seconds", "remove from 1:02 to 1:05"', "裁剪 ——「保留前30秒」"),
    "agent.can_join": ('join clips — "join the clips"', "合并片段 ——「把视频合并」"),
    "agent.can_slideshow": ('slideshow — "slideshow, 4 seconds per image"', "幻灯片 ——「每张图片3秒的幻灯片」"),
    "agent.can_speed": ('speed — "1.5x", "half speed", "slow motion"', "速度 ——「1.5倍速」「慢动作」"),
    "agent.can_sound": ('sound — "mute", "voice volume 80%"', "声音 ——「静音」「音量80%」"),
    "agent.can_music": ('background music — "add background music at 35%"', "背景音乐 ——「加背景音乐」"),
    "agent.can_title": ('titles and text — "add a title Urban Dreams", "put Subscribe at the end"',
                        "标题和文字 ——「标题 城市之夜」「结尾加文字 订阅」"),
    "agent.can_captions": ('captions — send an .srt or .vtt file, then "add the captions"',
                           "字幕 —— 发送 .srt 或 .vtt 文件，再说「加字幕」"),
    "agent.can_canvas": ('shape — "make it 9:16", "square with black bars"', "画面比例 ——「改成竖屏」「9:16」"),
    "agent.can_fade": ('fades — "fade in and out"', "淡入淡出 ——「淡入淡出」"),
    "agent.can_export": ('export — "export 1080p"', "导出 ——「导出 1080p」"),
    "agent.can_history": ('undo — "undo", "redo", "start over"', "撤销 ——「撤销」「重做」「重新开始」"),
    "agent.help": (
        "Here is what I can do offline — say it your way, several at once if you like:\n{lines}",
        "我可以离线完成这些——用你自己的话说，也可以一次说几件：\n{lines}",
    ),
    "agent.not_understood": (
        "I didn't understand \"{text}\", so nothing changed (no credit used). The closest things I can do:\n{lines}\n"
        'Say "help" for everything.',
        "我没有理解「{text}」，所以没有做任何修改（没有扣积分）。最接近的几项：\n{lines}\n说「帮助」查看全部。",
    ),
    "agent.export_later": (
        'I haven\'t exported anything yet: say "{how}" when you\'re ready and I\'ll make the video.',
        "还没有导出：准备好后说「{how}」，我就生成视频。",
    ),
    "agent.already": ("Nothing changed: it was already like that.", "没有变化：本来就是这样。"),
    "agent.already_joined": (
        "Nothing changed: your {n} clips play one after another in the order you sent them ({length} s).",
        "没有变化：你的 {n} 个片段已经按发送顺序依次播放（{length} 秒）。",
    ),
    "agent.caption_already": (
        "Nothing changed: 1 caption from {name} is already on the video.", "没有变化：{name} 的 1 条字幕已经在视频上。"
    ),
    "agent.captions_already": (
        "Nothing changed: {n} captions from {name} are already on the video.",
        "没有变化：{name} 的 {n} 条字幕已经在视频上。",
    ),
    "agent.changes_none": ("the timeline is as it was", "时间线和之前一样"),
    "agent.did_undo": (
        "↩️ Undone: {changes}. Say \"redo\" to bring it back.", "↩️ 已撤销：{changes}。说「重做」可恢复。"
    ),
    "agent.did_redo": ("↪️ Redone: {changes}.", "↪️ 已重做：{changes}。"),
    "agent.did_start_over": (
        "🔄 Started over from your uploads: {changes}. Say \"undo\" to get your edits back.",
        "🔄 已从上传的素材重新开始：{changes}。说「撤销」可找回之前的修改。",
    ),
    "agent.nothing_to_undo": ("There is nothing to undo: nothing changed.", "没有可以撤销的修改，什么也没有变。"),
    "agent.nothing_to_redo": ("There is nothing to redo: nothing changed.", "没有可以重做的修改，什么也没有变。"),
    "agent.nothing_to_start_over": (
        "Nothing changed: the timeline already holds just your uploads, unedited.",
        "没有变化：时间线上本来就只有你上传的原始素材。",
    ),
}
_CATALOGUE.update(_UNDERSTANDING_TEXTS)


# Captions from speech (localnemo's offline recogniser).
_CAPTION_TEXTS: dict[str, tuple[str, str]] = {
    "transcribing": ("🎙️ Transcribing… {percent}%", "🎙️ 正在识别语音… {percent}%"),
    "agent.transcribing": ("🎙️ Transcribing… {percent}%", "🎙️ 正在识别语音… {percent}%"),
    "agent.captions_made": (
        "💬 Captions from the speech: {n} captions ({words} words, heard by {engine}), placed where the words are "
        "said and following every cut.{cut} Say \"captions at the top\", \"bigger captions\" or \"karaoke "
        "captions\" to change how they look; the export comes with an .srt file you can correct.",
        "💬 已根据语音生成字幕：{n} 条（{words} 个词，由 {engine} 识别），与说话时间对齐，剪辑后依然同步。{cut}"
        "可以说「字幕放在顶部」「字幕放大」或「逐字高亮字幕」来调整样式；导出时会附带可修改的 .srt 文件。",
    ),
    "agent.captions_aligned": (
        "💬 Captions from your script: {n} captions, {words} words placed where they are said, following every "
        "cut.{cut} The export comes with an .srt file.",
        "💬 已按你的文稿生成字幕：{n} 条，{words} 个词与说话时间对齐，剪辑后依然同步。{cut}导出时会附带 .srt 文件。",
    ),
    "agent.captions_styled": (
        "💬 Captions now: {position}, {size}, {style}.", "💬 字幕样式已更新：{position}，{size}，{style}。"
    ),
    "agent.caption_bottom": ("at the bottom", "底部"),
    "agent.caption_middle": ("in the middle", "居中"),
    "agent.caption_top": ("at the top", "顶部"),
    "agent.caption_small": ("small", "小字"),
    "agent.caption_medium": ("medium size", "中等大小"),
    "agent.caption_large": ("large", "大字"),
    "agent.caption_plain": ("plain", "普通样式"),
    "agent.caption_karaoke": ("each word lit up as it is said", "逐字高亮"),
    "agent.no_video_for_captions": (
        "There is no clip with sound to caption yet: send a video first.", "还没有可以加字幕的视频：请先发送一个视频。"
    ),
    "agent.no_speech_heard": (
        "I heard no speech in the clips, so I made no captions.",
        "视频里没有听到说话声，所以没有生成字幕。",
    ),
    "agent.needs_whisper": (
        "I can't transcribe Chinese speech here: the offline recogniser knows only English. To caption Chinese, "
        "install the Whisper engine (pip install 'nemobot[whisper]') and set LOCALNEMO_WHISPER_MODEL to a "
        "faster-whisper model folder. Or send the captions as an .srt file and I'll burn them in.",
        "这里无法识别中文语音：离线识别器只懂英语。要生成中文字幕，请安装 Whisper 引擎（pip install "
        "'nemobot[whisper]'），并把 LOCALNEMO_WHISPER_MODEL 设为 faster-whisper 模型文件夹。也可以发送 .srt "
        "字幕文件，我会把它烧录到视频里。",
    ),
    "agent.speech_failed": (
        "I couldn't transcribe the speech, so nothing changed (no credit used). The server's log says why.",
        "无法识别语音，所以没有做任何修改（没有扣积分）。原因见服务器日志。",
    ),
    "agent.script_unmatched": (
        "I couldn't match your script to the speech in the clip, so nothing changed (no credit used). Check that "
        "it is the text of this clip.",
        "无法把你的文稿与视频里的语音对齐，所以没有做任何修改（没有扣积分）。请确认文稿就是这段视频的内容。",
    ),
}
_CAPTION_TEXTS.update({
    "export_captions": ("💬 The captions (.srt), timed to this video, to edit in any subtitle editor",
                        "💬 字幕文件（.srt），与这个视频的时间一致，可以用任何字幕编辑器修改"),
    "export_captions_link": ("💬 Captions (.srt): {url}", "💬 字幕文件（.srt）：{url}"),
})
_CATALOGUE.update(_CAPTION_TEXTS)

# localnemo's answers to an upload that is damaged or is not what its name says (localnemo/uploads.py): the
# refusals keep the API's "could not read <name>: why" shape; "upload.damaged" is the warning that goes with
# a file accepted in part, and the bot shows it as it comes ("upload_warning").
_UPLOAD_TEXTS: dict[str, tuple[str, str]] = {
    "upload.damaged": (
        "{name} is damaged: only the first {usable} s of {total} s can be used. That part is on the timeline; "
        "send the whole file again to use the rest.",
        "{name} 已损坏：{total} 秒中只有前 {usable} 秒可以使用。时间线上放的是这一部分；"
        "要用其余部分，请重新发送完整的文件。",
    ),
    "upload.damaged_too_short": (
        "could not read {name}: the file is damaged: it breaks off after {usable} s of {total} s, too little to use",
        "无法读取 {name}：文件已损坏，{total} 秒中只有前 {usable} 秒可读，太短，无法使用",
    ),
    "upload.no_picture": (
        "could not read {name}: the file is damaged: not one picture in it can be decoded",
        "无法读取 {name}：文件已损坏，其中没有一帧画面能解码",
    ),
    "upload.no_sound": (
        "could not read {name}: the file is damaged: none of its sound can be decoded",
        "无法读取 {name}：文件已损坏，其中的声音无法解码",
    ),
    "upload.repair_failed": (
        "could not read {name}: the file is damaged (only the first {usable} s of {total} s can be read) and "
        "that part could not be kept",
        "无法读取 {name}：文件已损坏（{total} 秒中只有前 {usable} 秒可读），而且这一部分无法保留",
    ),
    "upload.is_not": ("could not read {name}: it is {what}, not {kind}", "无法读取 {name}：它是{what}，不是{kind}"),
    "upload.is_not_unknown": (
        "could not read {name}: it is not {kind} (its content is no format this editor reads)",
        "无法读取 {name}：它不是{kind}（内容不是本编辑器能读取的格式）",
    ),
    "upload.kind_video": ("a video", "视频"),
    "upload.kind_image": ("an image", "图片"),
    "upload.kind_audio": ("a sound file", "音频文件"),
    "upload.is_png": ("a PNG image", "PNG 图片"),
    "upload.is_jpeg": ("a JPEG image", "JPEG 图片"),
    "upload.is_gif": ("a GIF image", "GIF 图片"),
    "upload.is_webp": ("a WebP image", "WebP 图片"),
    "upload.is_isobmff": ("an MP4/MOV video", "MP4/MOV 视频"),
    "upload.is_matroska": ("an MKV/WebM video", "MKV/WebM 视频"),
    "upload.is_avi": ("an AVI video", "AVI 视频"),
    "upload.is_wav": ("a WAV sound file", "WAV 音频"),
    "upload.is_mp3": ("an MP3 sound file", "MP3 音频"),
    "upload.is_pdf": ("a PDF document", "PDF 文档"),
    "upload.is_zip": ("a ZIP archive (or an Office document)", "ZIP 压缩包（或 Office 文档）"),
    "upload.is_archive": ("a compressed archive", "压缩包"),
    "upload.is_program": ("a program", "程序文件"),
    "upload.is_html": ("a web page (HTML)", "网页（HTML）"),
    "upload.is_text": ("a text file", "文本文件"),
    # The bot's side: a refused file with an accepted extension is told why, not the list of formats.
    "unreadable_file": ("I can't use {name}: {reason}.", "无法使用 {name}：{reason}。"),
    "unreadable_file_said": ("❌ {reason}.", "❌ {reason}。"),
    "upload_warning": ("⚠️ {warning}", "⚠️ {warning}"),
}
_CATALOGUE.update(_UPLOAD_TEXTS)
