// firegrid duty-officer console: plain JavaScript over the officer API (/api/v1), no build
// step. The token stays in this tab's sessionStorage and travels only in the Authorization
// header; live updates come from /api/v1/events (SSE) read through fetch so that the header
// can be sent.
'use strict';

const TEXT = {
  zh: {
    title: 'firegrid 消防值班台', token: '值班令牌', login: '登录', logout: '退出',
    sound_on: '提示音：开', sound_off: '提示音：关', tab_cases: '警情', tab_map: '村庄地图',
    no_cases: '辖区内没有未结警情。', back: '← 返回', place: '建筑与设备', camera: '最近摄像头',
    escalation: '升级路径', timeline: '处置记录', actions: '操作', acknowledge: '确认响应',
    dispatch: '派员', verify: '核实', dispose: '定性', close: '结案反馈', note: '备注',
    shelve: '屏蔽', reset_latch: '复位', assignee: '派往人员/队伍', finding: '核实结果',
    report: '处置情况', work_order: '后续工单（可选）', resident_informed: '已告知住户',
    reason: '屏蔽原因', other_case: '其他警情', quiet: '正常',
    building: '建筑', grid: '网格', devices: '设备', state: '状态',
    escalates_in: '升级倒计时', remind_in: '催办倒计时', overdue: '已超时', handle_in: '处置时限', closed: '已结案',
    live: '实时', offline_feed: '连接中断，重连中', confirmed: '已确认火警', drill: '演练',
    no_camera: '附近没有登记的摄像头。', no_event: '暂无事件', distance: '距离', snapshot: '抓拍',
    reached: '已通知', acked_by: '响应人', read_only: '只读权限', bad_token: '令牌无效',
    unplaced: '未登记设备', unplaced_flood: '大量未登记设备', unverified: '未核实',
    place_device: '登记设备位置', building_id: '建筑编号',
    fire_now: '火警', since_alarm: '报警已', address: '地址', silence: '静音', open_case: '查看',
    fire_acked: '已响应', stage: '阶段', at_level: '当前层级', tap_for_sound: '点击任意处开启警报声',
    p_open: '（', p_close: '）', p_comma: '，', p_colon: '：', p_list: '、', p_semi: '；',
    open_fires: '未结火警', no_fire: '当前没有火警', overdue_cases: '超时案件', none_overdue: '没有超时案件',
    close_needs: '结案前还需要：', need_disposition: '尚未定性：先在上方记录定性', need_reset: '锁存未复位',
    can_reset: '已恢复，可以复位', cannot_reset: '仍在报警，设备恢复后才能复位', reset_device: '复位',
    reset_all: '复位已恢复的设备', reset_done: '已复位：{done}', reset_left: '{devices} 仍在报警，未复位，设备恢复后再复位',
    not_durable: '已执行，但网关磁盘暂时无法写入：操作尚未保存，磁盘恢复后自动保存',
    st_active: '报警中', st_cleared: '已恢复', st_latched: '锁存未复位', st_shelved: '屏蔽至', channel: '通道',
    cam_active: '进行中', cam_ended: '已结束', confidence: '置信度', until: '至', time_zone: '时区',
    err_latched_devices: '结案前请先复位这些设备：{devices}',
    err_still_active: '{devices} 仍在报警，设备恢复后才能复位',
    err_nothing_to_reset: '没有可复位的设备：仍在报警的设备需等其恢复',
    err_not_disposed: '请先定性，再结案', err_closed: '案件已结案，只能添加备注',
    err_already_acknowledged: '此案件已有人响应', err_not_found: '案件不存在',
    err_out_of_scope: '该案件不在您的辖区内', err_read_only: '您的权限只能查看，不能操作',
    err_role: '只有值班员和指挥员可以执行此操作', err_invalid: '填写的内容无效，请检查必填项',
    err_unknown_device: '{devices} 不属于此案件', err_not_shelved: '{devices} 未被屏蔽',
    err_unauthenticated: '令牌无效或已失效', err_no_directory: '网关未配置值班人员名录，无法登录',
    err_bad_json: '请求格式错误', err_bad_query: '请求格式错误',
    err_not_unplaced: '此案件不是单个未登记设备的案件', err_no_registry: '网关未配置设备登记表，无法登记位置',
    err_registry: '设备登记表读写失败，请稍后重试', err_store: '案件存储暂不可用，请稍后重试',
    err_stopped: '告警服务已停止', err_network: '无法连接网关，请检查网络', err_unknown: '操作失败（{status}）',
    tab_firmware: '固件升级', fw_none: '当前没有固件升级。', fw_rollout: '固件升级',
    fw_forbidden: '只有值班员和指挥员可以查看固件升级',
    fw_running: '进行中', fw_paused: '已暂停', fw_done: '已完成',
    fw_paused_failures: '失败比例超过暂停阈值，正在升级的设备继续完成，不再开始新批次',
    fw_paused_operator: '运维人员已暂停（firegrid firmware resume 恢复）',
    fw_waves: '已开始批次', fw_failure_share: '失败比例', fw_threshold: '暂停阈值', fw_updated: '更新于',
    fw_id: '编号', fw_total: '共', fw_filter: '显示', fw_all: '全部', fw_device: '设备', fw_progress: '进度',
    fw_g_failed: '失败', fw_g_active: '升级中', fw_g_waiting: '等待', fw_g_booted: '已升级',
    fw_more: '另有 {n} 台未显示', fw_show_more: '再显示 {n} 台', fw_no_match: '没有处于此状态的设备。',
    fw_st_waiting: '等待批次', fw_st_offered: '已下发，待应答', fw_st_transferring: '传输中',
    fw_st_committed: '已提交，重启切换中', fw_st_trial: '试运行，待确认', fw_st_booted: '已升级',
    fw_st_failed_refused: '失败：签名被拒', fw_st_failed_bad_digest: '失败：镜像校验不符',
    fw_st_failed_rolled_back: '失败：自检未通过，已回滚', fw_st_failed_oversized: '失败：镜像过大',
    fw_st_failed_silent: '失败：无应答', fw_st_failed_downgrade: '失败：安全版本低于设备下限',
  },
  en: {
    title: 'firegrid duty console', token: 'Officer token', login: 'Sign in', logout: 'Sign out',
    sound_on: 'Sound: on', sound_off: 'Sound: off', tab_cases: 'Cases', tab_map: 'Village map',
    no_cases: 'No open cases in your scope.', back: '← Back', place: 'Building and devices',
    camera: 'Nearest camera', escalation: 'Escalation path', timeline: 'Timeline', actions: 'Actions',
    acknowledge: 'Acknowledge', dispatch: 'Dispatch', verify: 'Verify', dispose: 'Disposition',
    close: 'Close with feedback', note: 'Note', shelve: 'Shelve', reset_latch: 'Reset latch',
    assignee: 'Who goes', finding: 'What was found', report: 'What happened and what was done',
    work_order: 'Follow-up work order (optional)', resident_informed: 'Resident informed',
    reason: 'Why shelve', other_case: 'Other case', quiet: 'Quiet',
    building: 'Building', grid: 'Grid', devices: 'Devices', state: 'State',
    escalates_in: 'Escalates in', remind_in: 'Reminder in', overdue: 'Overdue by', handle_in: 'Handling due in',
    closed: 'Closed',
    live: 'Live', offline_feed: 'Feed lost, reconnecting', confirmed: 'Confirmed fire', drill: 'Drill',
    no_camera: 'No registered camera nearby.', no_event: 'No event yet', distance: 'distance',
    snapshot: 'snapshot', reached: 'notified', acked_by: 'Acknowledged by', read_only: 'Read-only role',
    bad_token: 'Token not accepted', unplaced: 'Unplaced device',
    unplaced_flood: 'Unplaced flood', unverified: 'unverified', place_device: 'Place the device',
    building_id: 'Building id',
    fire_now: 'FIRE', since_alarm: 'alarm', address: 'Address', silence: 'Silence', open_case: 'Open',
    fire_acked: 'Acknowledged', stage: 'Stage', at_level: 'At', tap_for_sound: 'Tap anywhere to turn the alarm sound on',
    p_open: ' (', p_close: ')', p_comma: ', ', p_colon: ': ', p_list: ', ', p_semi: '; ',
    open_fires: 'Open fires', no_fire: 'No fire now', overdue_cases: 'Overdue cases', none_overdue: 'No overdue case',
    close_needs: 'Before closing:', need_disposition: 'No disposition yet: record one above', need_reset: 'latched, not reset',
    can_reset: 'cleared, can be reset', cannot_reset: 'still in alarm; it can be reset once it has cleared',
    reset_device: 'Reset', reset_all: 'Reset the cleared devices', reset_done: 'Reset: {done}',
    reset_left: '{devices} still in alarm, not reset; reset it once it has cleared',
    not_durable: 'Carried out, but the gateway cannot write to its disk: not stored yet; it is stored when the disk recovers',
    st_active: 'In alarm', st_cleared: 'Cleared', st_latched: 'Latched, not reset', st_shelved: 'Shelved until',
    channel: 'Channel', cam_active: 'ongoing', cam_ended: 'ended', confidence: 'confidence', until: 'until',
    time_zone: 'Time zone',
    err_latched_devices: 'Reset these devices before closing: {devices}',
    err_still_active: '{devices} still reports the alarm; it can be reset once it has cleared',
    err_nothing_to_reset: 'Nothing to reset: devices still in alarm can be reset once they clear',
    err_not_disposed: 'Record a disposition before closing', err_closed: 'The case is closed; only notes may be added',
    err_already_acknowledged: 'Someone already acknowledged this case', err_not_found: 'No such case',
    err_out_of_scope: 'This case is outside your scope', err_read_only: 'Your role may read cases, not act on them',
    err_role: 'Only duty officers and commanders may do this', err_invalid: 'Not valid: {message}',
    err_unknown_device: '{devices} is not part of this case', err_not_shelved: '{devices} is not shelved',
    err_unauthenticated: 'Token not accepted or expired', err_no_directory: 'The gateway has no officer directory',
    err_bad_json: 'Malformed request', err_bad_query: 'Malformed request',
    err_not_unplaced: 'Not the case of one unplaced device', err_no_registry: 'The gateway has no registry file',
    err_registry: 'Cannot read or write the registry; try again', err_store: 'The case store is unavailable; try again',
    err_stopped: 'The alarm loop has stopped', err_network: 'Cannot reach the gateway', err_unknown: 'Failed ({status})',
    tab_firmware: 'Firmware', fw_none: 'No firmware rollout.', fw_rollout: 'Firmware rollout',
    fw_forbidden: 'Only duty officers and commanders may follow a firmware rollout',
    fw_running: 'Running', fw_paused: 'Paused', fw_done: 'Done',
    fw_paused_failures: 'the failure share passed its threshold; devices already updating finish, no new wave starts',
    fw_paused_operator: 'paused by the operator (firegrid firmware resume)',
    fw_waves: 'Waves started', fw_failure_share: 'Failure share', fw_threshold: 'pause threshold', fw_updated: 'Updated',
    fw_id: 'id', fw_total: 'Total', fw_filter: 'Show', fw_all: 'All', fw_device: 'Device', fw_progress: 'Progress',
    fw_g_failed: 'Failed', fw_g_active: 'In progress', fw_g_waiting: 'Waiting', fw_g_booted: 'Updated',
    fw_more: '{n} more not shown', fw_show_more: 'Show {n} more', fw_no_match: 'No device in this state.',
    fw_st_waiting: 'Waiting for its wave', fw_st_offered: 'Offered, no answer yet', fw_st_transferring: 'Receiving',
    fw_st_committed: 'Committed, restarting to swap', fw_st_trial: 'On trial, being confirmed', fw_st_booted: 'Updated',
    fw_st_failed_refused: 'Failed: signature refused', fw_st_failed_bad_digest: 'Failed: image digest mismatch',
    fw_st_failed_rolled_back: 'Failed: self-test, rolled back', fw_st_failed_oversized: 'Failed: image too large',
    fw_st_failed_silent: 'Failed: no answer', fw_st_failed_downgrade: 'Failed: below the device\'s security floor',
  },
};

// The field's words (stages, severities, levels, dispositions, causes, device kinds ...) come
// from the glossary the gateway titles its pages with, /console/glossary.json, merged into TEXT
// under these prefixes: one word for one thing on the console and in the pages.
const GLOSSARY_PREFIX = {
  stage: 'stage_', severity: 'sev_', level: 'level_', outcome: 'o_', cause: 'c_', method: 'm_',
  device_kind: 'kind_', camera_event: 'ev_', transition: 't_',
};

async function loadGlossary() {
  const res = await fetch('/console/glossary.json');
  const glossary = await res.json();
  for (const [group, terms] of Object.entries(glossary)) {
    const prefix = GLOSSARY_PREFIX[group];
    if (!prefix) continue;
    for (const [name, term] of Object.entries(terms)) {
      TEXT.zh[prefix + name] = term.zh;
      TEXT.en[prefix + name] = term.en;
    }
  }
}

const SEVERITY_RANK = { fire: 6, pre_alarm: 5, water: 4, communication_loss: 3, offline: 2, fault: 1 };
// Transitions that call for the officer's attention: a sound and a flash.
const LOUD = new Set(['opened', 'confirmed', 'spread', 'escalated', 'reminder', 'handling_overdue']);

const state = {
  // Chinese unless this browser chose English with the switch (remembered here).
  lang: localStorage.getItem('firegrid.lang') === 'en' ? 'en' : 'zh',
  token: sessionStorage.getItem('firegrid.token'),
  me: null,
  cases: [],
  fresh: new Set(),
  buildings: [],
  detail: null,
  sound: true,
  audio: null,
  feed: null,
  refresh: null,
  // Fire cases whose siren this officer silenced here (the banner stays until the case closes).
  silenced: new Set(),
  sirens: 0,
  // The firmware rollout as last read (null: none), whether one answer came yet, the last
  // refusal, the filter and how many rows are shown.
  fw: null,
  fwLoaded: false,
  fwError: null,
  fwFilter: 'all',
  fwShown: 0,
  fwTimer: null,
  fwLoading: false,
};

const $ = (sel) => document.querySelector(sel);
const t = (key) => TEXT[state.lang][key] ?? key;
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
};

function translate() {
  document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
  document.querySelectorAll('[data-t]').forEach((n) => { n.textContent = t(n.dataset.t); });
  document.querySelectorAll('[data-tp]').forEach((n) => { n.placeholder = t(n.dataset.tp); });
  $('#lang').textContent = state.lang === 'zh' ? 'EN' : '中文';
  $('#sound').textContent = t(state.sound ? 'sound_on' : 'sound_off');
  document.title = t('title');
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (options.body) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { ...options, headers });
  } catch (_) {
    const error = new Error('network');
    error.code = 'network';
    throw error;
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    // {"error": {"code", "message", "devices"}}: the code picks the officer's sentence.
    const e = body.error || {};
    const error = new Error(e.message || `${res.status} ${res.statusText}`);
    error.status = res.status;
    error.code = e.code || 'unknown';
    error.devices = e.devices || [];
    throw error;
  }
  return body;
}

// A device as officers know it: what it is and its id (烟感 sd-3; a camera's channel as
// 摄像头 cam-1 通道 2).
function deviceName(id) {
  const [base, channel] = String(id).split('/');
  const d = state.detail?.building?.devices.find((x) => x.id === base);
  const ch = channel?.match(/^ch(\d+)$/);
  const name = ch ? `${base} ${t('channel')} ${ch[1]}` : id;
  return d ? `${t(`kind_${d.kind}`)} ${name}` : name;
}

function errorText(error) {
  const key = `err_${error.code || 'unknown'}`;
  const text = TEXT[state.lang][key] ?? t('err_unknown');
  return text
    .replace('{devices}', (error.devices || []).map(deviceName).join(t('p_list')))
    .replace('{message}', error.message || '')
    .replace('{status}', error.status || '');
}

function scopeText(scope) {
  const [level, name] = String(scope).split(':');
  return name ? `${t(`level_${level}`)} ${name}` : scope;
}

// ---- sign in / out ----

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api('/api/v1/me');
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem('firegrid.token');
    $('#login-error').textContent = `${t('bad_token')}${t('p_colon')}${errorText(error)}`;
    return;
  }
  sessionStorage.setItem('firegrid.token', token);
  state.timeZone = state.me.time_zone || Intl.DateTimeFormat().resolvedOptions().timeZone;
  state.formats = {};
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  $('#sound').hidden = false;
  $('#live').hidden = false;
  showWho();
  $('#actions').hidden = !state.me.may_act;
  // The rollout answers duty officers and commanders only; other roles have no tab for it.
  $('nav button[data-view=firmware]').hidden = !state.me.may_administer_devices;
  await Promise.all([loadCases(), loadBuildings()]);
  renderBanner();
  if (state.wall) {
    showView('wall');
    renderMap();
    renderWall();
  }
  follow();
  // A notification link (/console/cases/<id>) opens on its case once signed in.
  const linked = location.pathname.match(/^\/console\/cases\/(\d+)$/);
  if (linked) {
    try {
      await openCase(Number(linked[1]));
    } catch (error) {
      $('#action-error').textContent = errorText(error);
    }
  }
}

function showWho() {
  if (!state.me) return;
  $('#who').textContent = `${state.me.id} · ${scopeText(state.me.scope)}${state.me.may_act ? '' : ` · ${t('read_only')}`}`;
  $('#zone').textContent = `${t('time_zone')} ${state.timeZone}`;
}

function signOut() {
  sessionStorage.removeItem('firegrid.token');
  location.reload();
}

// ---- cases ----

async function loadCases() {
  const { cases } = await api('/api/v1/cases?state=open&limit=1000');
  cases.sort((a, b) => (SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity]) || (b.opened - a.opened));
  state.cases = cases;
  renderCases();
  renderMap();
}

function refreshSoon() {
  clearTimeout(state.refresh);
  state.refresh = setTimeout(async () => {
    await loadCases().catch(() => {});
    if (state.detail) await openCase(state.detail.case.id).catch(() => {});
  }, 200);
}

function due(c, now = Date.now()) {
  if (c.stage === 'feedback') return null;
  // The district is the top desk: nothing escalates further, its deadline brings a reminder.
  if (c.stage === 'warning' && c.ack_due) return { key: c.level === 'district' ? 'remind_in' : 'escalates_in', at: c.ack_due };
  if (c.handle_due) return { key: 'handle_in', at: c.handle_due };
  return null;
}

function span(seconds) {
  const abs = Math.abs(seconds);
  return abs >= 3600
    ? `${Math.floor(abs / 3600)}h ${String(Math.floor(abs / 60) % 60).padStart(2, '0')}m`
    : `${Math.floor(abs / 60)}:${String(abs % 60).padStart(2, '0')}`;
}

function countdown(c) {
  const d = due(c);
  if (!d) return { text: c.stage === 'feedback' ? t('closed') : '', late: false };
  const left = Math.round((d.at - Date.now()) / 1000);
  return left >= 0 ? { text: `${t(d.key)} ${span(left)}`, late: false } : { text: `${t('overdue')} ${span(left)}`, late: true };
}

function where(c) {
  const l = c.location;
  // A device the registry does not know has no building: say so, and whose desk it is at.
  if (c.unplaced) {
    const what = c.unplaced.flood ? `${t('unplaced_flood')} (${c.unplaced.village})` : `${t('unplaced')} ${c.unplaced.device}`;
    return `${what} · ${t('unverified')} · ${l.street || l.community || l.district}`;
  }
  return l.building ? `${l.building} · ${l.grid} · ${l.community}` : `${l.grid} · ${l.community} · ${l.street}`;
}

function renderCases() {
  const list = $('#cases');
  list.replaceChildren();
  $('#cases-empty').hidden = state.cases.length > 0;
  for (const c of state.cases) {
    const due = el('span', { className: 'due' });
    const item = el('li', { className: `case sev-${c.severity}` },
      el('span', { className: 'sev' }, t(`sev_${c.severity}`) + (c.drill ? ` · ${t('drill')}` : '')),
      el('span', { className: 'where' }, `#${c.id} ${where(c)}`),
      due,
      el('span', { className: 'meta' },
        `${t('stage')} ${t(`stage_${c.stage}`)} · ${t('at_level')} ${t(`level_${c.level}`)} · ${Object.keys(c.alarms).length} ${t('devices')}`));
    item.dataset.case = c.id;
    item.dataset.severity = c.severity;
    item.dataset.stage = c.stage;
    if (c.unplaced) item.classList.add('unplaced');
    if (state.fresh.has(c.id)) item.classList.add('new');
    item.addEventListener('click', () => openCase(c.id));
    list.append(item);
  }
  state.fresh.clear();
  renderBanner();
  renderWall();
  tick();
}

// ---- a fire takes over the console ----

function openFires() {
  return state.cases.filter((c) => c.severity === 'fire' && c.stage !== 'feedback');
}

// A fire nobody acknowledged yet, and whose siren this officer did not silence: it sounds.
function sounding(c) {
  return c.stage === 'warning' && !c.drill && !state.silenced.has(c.id);
}

function renderBanner() {
  const fires = openFires();
  const banner = $('#fire-banner');
  // On the wall the fires fill the screen themselves.
  banner.hidden = fires.length === 0 || state.wall;
  document.body.classList.toggle('on-fire', fires.length > 0);
  const list = $('#fire-list');
  list.replaceChildren();
  for (const c of fires) {
    const b = state.buildings.find((x) => x.id === c.location.building);
    const buttons = el('span', { className: 'fire-actions' });
    if (c.stage === 'warning' && state.me?.may_act) {
      const ack = el('button', { type: 'button', className: 'ack' }, t('acknowledge'));
      ack.addEventListener('click', () => acknowledgeFire(c.id));
      buttons.append(ack);
    }
    if (sounding(c)) {
      const hush = el('button', { type: 'button', className: 'hush' }, t('silence'));
      hush.addEventListener('click', () => { state.silenced.add(c.id); renderBanner(); });
      buttons.append(hush);
    }
    const open = el('button', { type: 'button', className: 'open' }, t('open_case'));
    open.addEventListener('click', () => openCase(c.id));
    buttons.append(open);
    const row = el('div', { className: `fire${c.stage === 'warning' ? ' unacked' : ''}` },
      el('strong', { className: 'fire-what' },
        `${t('fire_now')} #${c.id}${c.drill ? ` · ${t('drill')}` : ''}${c.stage === 'warning' ? '' : ` · ${t('fire_acked')}`}`),
      el('span', { className: 'fire-building' }, c.unplaced ? where(c) : c.location.building),
      el('span', { className: 'fire-address' }, b ? `${t('address')} ${b.address}` : ''),
      el('span', { className: 'fire-grid' }, `${t('grid')} ${c.location.grid || '—'} · ${c.location.community || c.location.street || ''}`),
      el('span', { className: 'fire-since' }),
      buttons);
    row.dataset.case = c.id;
    row.dataset.stage = c.stage;
    list.append(row);
  }
  banner.dataset.sounding = fires.some(sounding);
}

async function acknowledgeFire(id) {
  $('#fire-error').textContent = '';
  try {
    await api(`/api/v1/cases/${id}/actions`, { method: 'POST', body: JSON.stringify({ command: 'acknowledge' }) });
  } catch (error) {
    $('#fire-error').textContent = errorText(error);
  }
  await loadCases().catch(() => {});
  if (state.detail?.case.id === id) await openCase(id).catch(() => {});
}

// A two-tone siren, synthesised (no audio file to load): 960 Hz and 770 Hz, 0.4 s each, the
// pattern of a fire appliance, loud enough to wake a dozing officer and unlike the short
// beep of other cases.
function siren() {
  if (!state.sound) return;
  try {
    state.audio = state.audio || new AudioContext();
    if (state.audio.state === 'suspended') {
      state.audio.resume().catch(() => {});
      $('#sound-hint').hidden = false;
    } else {
      $('#sound-hint').hidden = true;
    }
    const now = state.audio.currentTime;
    const osc = state.audio.createOscillator();
    const gain = state.audio.createGain();
    osc.type = 'square';
    osc.frequency.setValueAtTime(960, now);
    osc.frequency.setValueAtTime(770, now + 0.4);
    osc.frequency.setValueAtTime(960, now + 0.8);
    osc.frequency.setValueAtTime(770, now + 1.2);
    gain.gain.value = 0.15;
    osc.connect(gain).connect(state.audio.destination);
    osc.start(now);
    osc.stop(now + 1.6);
    state.sirens += 1;
    $('#fire-banner').dataset.sirens = state.sirens;
  } catch (_) { /* no audio device: the banner and the title still show */ }
}

// Every two seconds while a fire sounds: the siren again, until acknowledged or silenced.
function sirenLoop() {
  if (openFires().some(sounding)) siren();
}

function fireTick() {
  const fires = openFires();
  const now = Date.now();
  document.querySelectorAll('#fire-list .fire').forEach((row) => {
    const c = fires.find((x) => String(x.id) === row.dataset.case);
    if (c) row.querySelector('.fire-since').textContent = `${t('since_alarm')} ${span(Math.round((now - c.opened) / 1000))}`;
  });
  // The tab's title flashes while a fire is unacknowledged, so that a console in a background
  // tab or a minimised window still shows it.
  const loud = fires.filter((c) => c.stage === 'warning');
  if (loud.length) {
    const where = loud.map((c) => c.location.building || `#${c.id}`).join(' ');
    document.title = Math.floor(now / 1000) % 2 ? `🔥【${t('sev_fire')}】${where}` : `████ ${t('sev_fire')} ████`;
  } else if (document.title !== t('title')) {
    document.title = t('title');
  }
}

function tick() {
  fireTick();
  wallTick();
  document.querySelectorAll('#cases li').forEach((item) => {
    const c = state.cases.find((x) => String(x.id) === item.dataset.case);
    if (!c) return;
    const { text, late } = countdown(c);
    const span = item.querySelector('.due');
    span.textContent = text;
    span.classList.toggle('overdue', late);
  });
  if (state.detail) {
    const { text, late } = countdown(state.detail.case);
    $('#detail-countdown').textContent = text;
    $('#detail-countdown').classList.toggle('overdue', late);
  }
}

// ---- case detail ----

async function openCase(id) {
  const detail = await api(`/api/v1/cases/${id}`);
  state.detail = detail;
  renderDetail();
  showView('detail');
}

// Every time on the officers' clock: the deployment's zone (`[alerting] time_zone`, served by
// /api/v1/me), whatever zone the browser's machine is set to.
function fmtTime(ms, short = false) {
  const key = `${state.lang}-${short}`;
  state.formats = state.formats || {};
  if (!state.formats[key]) {
    const options = short
      ? { timeZone: state.timeZone, month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }
      : { timeZone: state.timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };
    state.formats[key] = new Intl.DateTimeFormat(state.lang === 'zh' ? 'zh-CN' : 'en-GB', options);
  }
  return state.formats[key].format(new Date(ms));
}

function renderDetail() {
  const { case: c, timeline, building, camera } = state.detail;
  const section = $('#detail');
  section.dataset.case = c.id;
  section.dataset.stage = c.stage;
  section.dataset.severity = c.severity;
  $('#detail-title').textContent = `#${c.id} ${t(`sev_${c.severity}`)} · ${where(c)}`;
  const flags = [t(`stage_${c.stage}`), `${t('reached')}${t('p_colon')}${c.reached.map((l) => t(`level_${l}`)).join(' → ')}`];
  if (c.confirmed) flags.push(t('confirmed'));
  if (c.drill) flags.push(t('drill'));
  if (c.unplaced) flags.push(`${c.unplaced.flood ? t('unplaced_flood') : t('unplaced')} · ${t('unverified')}`);
  if (c.acknowledged) flags.push(`${t('acked_by')} ${c.acknowledged.officer}`);
  $('#detail-summary').textContent = flags.join(' · ');

  $('#detail-building').textContent = building
    ? `${building.id} · ${building.address} (${building.lat.toFixed(5)}, ${building.lon.toFixed(5)})`
    : c.location.building || where(c);
  const devices = $('#detail-devices');
  devices.replaceChildren();
  const listed = building ? building.devices : Object.keys(c.alarms).map((id) => ({ id, kind: '', model: '' }));
  for (const d of listed) {
    const alarm = c.alarms[d.id];
    const status = [];
    if (alarm) {
      status.push(t(alarm.active ? 'st_active' : 'st_cleared'));
      if (alarm.latched) status.push(t('st_latched'));
      if (alarm.shelved_until) status.push(`${t('st_shelved')} ${fmtTime(alarm.shelved_until, true)}`);
    }
    const kind = d.kind ? t(`kind_${d.kind}`) : '';
    const item = el('li', {}, `${d.id} ${kind} ${d.model} `, el('strong', {}, status.join(' · ')));
    item.dataset.device = d.id;
    if (alarm?.active) item.classList.add('in-alarm');
    if (alarm?.latched) item.append(...latchControls(d.id, alarm));
    devices.append(item);
  }
  renderCloseNeeds(c);

  const cam = $('#detail-camera');
  if (!camera) {
    cam.textContent = t('no_camera');
  } else {
    const latest = camera.latest;
    const head = `${camera.device}${t('p_open')}${camera.building}${t('p_comma')}${t('distance')} ${Math.round(camera.distance_m)} m${t('p_close')}`;
    cam.textContent = latest
      ? `${head}${t('p_colon')}${t('channel')} ${latest.channel} · ${t(`ev_${latest.event}`)} · ${t(latest.active ? 'cam_active' : 'cam_ended')}`
        + ` · ${t('confidence')} ${latest.confidence_pct}% · ${fmtTime(latest.at_ms)}`
        + (latest.snapshot ? ` · ${t('snapshot')}: ${latest.snapshot}` : '')
      : `${head}${t('p_colon')}${t('no_event')}`;
  }

  const path = $('#detail-path');
  path.replaceChildren();
  for (const entry of timeline.filter((x) => ['opened', 'escalated', 'spread', 'confirmed'].includes(x.kind.transition))) {
    path.append(el('li', {}, `${t(`level_${entry.level}`)} · ${t(`t_${entry.kind.transition}`)} · ${fmtTime(entry.at)}`));
  }

  const list = $('#detail-timeline');
  list.replaceChildren();
  for (const entry of timeline) {
    const k = entry.kind;
    const disposition = k.disposition
      && (k.disposition.cause ? `${t(`o_${k.disposition.outcome}`)}${t('p_colon')}${t(`c_${k.disposition.cause}`)}` : t(`o_${k.disposition.outcome}`));
    const extra = k.assignee || (k.finding && `${t(`m_${k.method}`)}${t('p_colon')}${k.finding}`) || k.text
      || (k.reason && `${k.reason}${k.until ? ` · ${t('until')} ${fmtTime(k.until, true)}` : ''}`)
      || disposition || (k.feedback && k.feedback.report)
      || (k.from ? `${t(`level_${k.from}`)} → ${t(`level_${entry.level}`)}` : '')
      || (k.building || '');
    // The device an entry is about (a reset, a shelve, an alarm), and the officer who acted.
    const parts = [fmtTime(entry.at), t(`t_${k.transition}`)];
    if (entry.device) parts.push(deviceName(entry.device));
    if (extra) parts.push(extra);
    if (entry.officer) parts.push(`· ${entry.officer}`);
    const item = el('li', {}, parts.join(' '));
    item.dataset.transition = k.transition;
    list.append(item);
  }

  const shelve = $('#act-shelve select[name=device]');
  shelve.replaceChildren(...Object.keys(c.alarms).map((id) => el('option', { value: id }, id)));
  const closed = c.stage === 'feedback';
  $('#act-acknowledge').disabled = c.stage !== 'warning';
  $('#act-acknowledge').hidden = c.stage !== 'warning';
  for (const form of ['dispatch', 'verify', 'dispose']) {
    $(`#act-${form} button`).disabled = closed || c.stage === 'warning';
  }
  $('#act-close button').disabled = closed || !c.disposition;
  $('#act-shelve button').disabled = closed;
  const resettable = Object.values(c.alarms).filter((a) => a.latched && !a.active).length;
  $('#act-reset_latch').disabled = resettable === 0;
  $('#act-reset_latch').textContent = `${t('reset_all')}${resettable ? ` (${resettable})` : ''}`;
  $('#act-place').hidden = !c.unplaced || c.unplaced.flood || closed;
  // A refusal stays on screen while the officer is on its case (a live refresh does not wipe it).
  if (state.errorShown !== c.id) {
    $('#action-error').textContent = '';
    $('#action-notice').textContent = '';
  }
  tick();
}

// A latched device: a reset button once it has cleared, or why it cannot be reset yet.
function latchControls(device, alarm) {
  if (alarm.active) return [el('span', { className: 'why' }, t('cannot_reset'))];
  const button = el('button', { type: 'button', className: 'reset-one' }, t('reset_device'));
  button.dataset.device = device;
  button.addEventListener('click', () => resetLatches(device));
  return [button];
}

// What closing still needs, shown before the officer tries: a disposition, and every latched
// device by name with whether it can be reset now.
function renderCloseNeeds(c) {
  const list = $('#close-missing');
  list.replaceChildren();
  if (c.stage !== 'feedback') {
    if (!c.disposition) list.append(el('li', { className: 'need-disposition' }, t('need_disposition')));
    for (const [device, alarm] of Object.entries(c.alarms).filter(([, a]) => a.latched)) {
      const item = el('li', {}, `${deviceName(device)} · ${t('need_reset')} · ${t(alarm.active ? 'cannot_reset' : 'can_reset')}`);
      item.dataset.device = device;
      if (!alarm.active) item.append(...latchControls(device, alarm));
      list.append(item);
    }
  }
  $('#close-needs').hidden = list.children.length === 0;
}

// Resets one device, or every cleared one; says which stayed latched because they are still
// in alarm (the gateway resets only those that have cleared).
async function resetLatches(device = null) {
  const before = state.detail.case.alarms;
  const ok = await act({ command: 'reset_latch', device }, 'actions', $('#act-reset_latch'));
  if (!ok) return;
  const after = state.detail.case.alarms;
  const done = Object.keys(before).filter((d) => before[d].latched && !after[d]?.latched);
  const left = Object.keys(after).filter((d) => after[d].latched && after[d].active);
  const notice = [];
  if (done.length) notice.push(t('reset_done').replace('{done}', done.map(deviceName).join(t('p_list'))));
  if (!device && left.length) notice.push(t('reset_left').replace('{devices}', left.map(deviceName).join(t('p_list'))));
  $('#action-notice').textContent = notice.join(t('p_semi'));
}

// Carries out one command. On a refusal (409, 422 ...) the sentence shows and every form keeps
// what the officer typed; a form is emptied only once its command succeeded.
async function act(body, route = 'actions', from = null) {
  const id = state.detail.case.id;
  // The refusal shows right under what the officer pressed, not at the top of the page.
  if (from) from.after($('#action-error'), $('#action-notice'));
  $('#action-error').textContent = '';
  $('#action-notice').textContent = '';
  let answer;
  try {
    answer = await api(`/api/v1/cases/${id}/${route}`, { method: 'POST', body: JSON.stringify(body) });
  } catch (error) {
    $('#action-error').textContent = errorText(error);
    state.errorShown = id;
    return false;
  }
  state.errorShown = null;
  await openCase(id).catch(() => {});
  await loadCases().catch(() => {});
  // 202: done, but held in memory until the gateway's disk takes writes again.
  if (answer && answer.durable === false) $('#action-notice').textContent = t('not_durable');
  return true;
}

function wireActions() {
  $('#act-acknowledge').addEventListener('click', () => act({ command: 'acknowledge' }, 'actions', $('#act-acknowledge')));
  // A cause belongs to a false alarm only.
  const outcome = $('#act-dispose select[name=outcome]');
  const showCause = () => { $('#act-dispose select[name=cause]').hidden = outcome.value !== 'false_alarm'; };
  outcome.addEventListener('change', showCause);
  showCause();
  $('#act-reset_latch').addEventListener('click', () => resetLatches(null));
  const on = (id, build) => $(`#act-${id}`).addEventListener('submit', async (event) => {
    event.preventDefault();
    const target = event.target;
    if (await act(build(new FormData(target)), 'actions', target)) target.reset();
  });
  on('dispatch', (f) => ({ command: 'dispatch', assignee: f.get('assignee') }));
  on('verify', (f) => ({ command: 'verify', method: f.get('method'), finding: f.get('finding') }));
  on('dispose', (f) => {
    const outcome = f.get('outcome');
    const disposition = outcome === 'false_alarm' ? { outcome, cause: f.get('cause') } : { outcome };
    return { command: 'dispose', disposition };
  });
  on('close', (f) => {
    const order = (f.get('work_order') || '').trim();
    return {
      command: 'close',
      feedback: {
        report: f.get('report'),
        work_orders: order ? [{ kind: 'follow_up', detail: order }] : [],
        resident_informed: f.get('resident_informed') === 'on',
      },
    };
  });
  on('note', (f) => ({ command: 'note', text: f.get('text') }));
  $('#act-place').addEventListener('submit', async (event) => {
    event.preventDefault();
    const target = event.target;
    if (await act({ building: new FormData(target).get('building') }, 'place', target)) target.reset();
  });
  on('shelve', (f) => ({ command: 'shelve', device: f.get('device'), duration: f.get('duration'), reason: f.get('reason') }));
}

// ---- village map ----

async function loadBuildings() {
  const { buildings } = await api('/api/v1/buildings');
  const first = !state.buildings.length;
  state.buildings = buildings;
  if (first) for (const svg of [$('#map'), $('#wall-map')]) if (svg.basemap?.loaded()) fitVillage(svg);
  renderMap();
  renderBanner();
}

function worstByBuilding() {
  const worst = new Map();
  for (const c of state.cases) {
    const b = c.location.building;
    if (b && (!worst.has(b) || SEVERITY_RANK[c.severity] > SEVERITY_RANK[worst.get(b).severity])) worst.set(b, c);
  }
  return worst;
}

function colourClass(c) {
  if (!c) return 'sev-none';
  return c.severity === 'fire' || c.severity === 'pre_alarm' ? `sev-${c.severity}` : 'sev-other';
}

const FILL = { 'sev-fire': '#c62828', 'sev-pre_alarm': '#ef6c00', 'sev-other': '#6a1b9a', 'sev-none': '#bdbdbd' };

function renderMap() {
  if (!state.buildings.length) return;
  drawMap($('#map'));
  if (state.wall) drawMap($('#wall-map'));
  listBuildings();
}

// The map's drawing area in the SVG's viewBox (1000 × 700), inside a margin for the largest
// dot and its label.
const MAP_BOX = { left: 40, top: 50, width: 920, height: 610 };

// Longitude and latitude onto the drawing area, one scale for both axes so that the village
// keeps its shape: a degree of longitude is cos(latitude) as long as one of latitude
// (equirectangular, exact enough across a village).
function projection(buildings) {
  const lats = buildings.map((b) => b.lat);
  const lons = buildings.map((b) => b.lon);
  const [minLat, maxLat, minLon, maxLon] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const k = Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180);
  const spanX = (maxLon - minLon) * k;
  const spanY = maxLat - minLat;
  const scale = spanX || spanY ? Math.min(spanX ? MAP_BOX.width / spanX : Infinity, spanY ? MAP_BOX.height / spanY : Infinity) : 0;
  const offX = MAP_BOX.left + (MAP_BOX.width - spanX * scale) / 2;
  const offY = MAP_BOX.top + (MAP_BOX.height - spanY * scale) / 2;
  return { width: 1000, at: (lon, lat) => [offX + (lon - minLon) * k * scale, offY + (maxLat - lat) * scale] };
}

// Over a basemap the drawing is in the frame's screen pixels, placed by the map's own
// projection (Web Mercator), so the buildings sit on the streets of the basemap.
function basemapProjection(svg) {
  const map = svg.basemap;
  const { width, height } = svg.getBoundingClientRect();
  svg.setAttribute('viewBox', `0 0 ${width.toFixed(0)} ${height.toFixed(0)}`);
  return { width, at: (lon, lat) => { const p = map.project([lon, lat]); return [p.x, p.y]; } };
}

// The convex hull of points [x, y] (Andrew's monotone chain), counter-clockwise.
function convexHull(points) {
  const p = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (p.length < 3) return p;
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const half = (list) => {
    const out = [];
    for (const q of list) {
      while (out.length >= 2 && cross(out[out.length - 2], out[out.length - 1], q) <= 0) out.pop();
      out.push(q);
    }
    out.pop();
    return out;
  };
  return [...half(p), ...half([...p].reverse())];
}

// Each grid's boundary: the hull of its buildings, each widened by `pad` so that a grid of one
// building or one row still has an area.
function gridOutlines(buildings, at, pad) {
  const grids = new Map();
  for (const b of buildings) {
    if (!grids.has(b.grid)) grids.set(b.grid, []);
    const [cx, cy] = at(b.lon, b.lat);
    grids.get(b.grid).push([cx - pad, cy - pad], [cx + pad, cy - pad], [cx + pad, cy + pad], [cx - pad, cy + pad]);
  }
  return [...grids].map(([grid, points]) => ({ grid, hull: convexHull(points) }));
}

function drawMap(svg) {
  const worst = worstByBuilding();
  const { width, at } = svg.basemap ? basemapProjection(svg) : projection(state.buildings);
  const ns = 'http://www.w3.org/2000/svg';
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  svg.replaceChildren();
  const fireGrids = new Set(state.buildings.filter((b) => worst.get(b.id)?.severity === 'fire').map((b) => b.grid));
  // Grid boundaries under everything, each named at an edge.
  const grids = node('g', { class: 'grids' });
  for (const { grid, hull } of gridOutlines(state.buildings, at, 10)) {
    const points = hull.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(' ');
    grids.append(node('polygon', { class: 'grid-outline', points, 'data-grid': grid }));
    const left = Math.min(...hull.map((h) => h[0]));
    const right = Math.max(...hull.map((h) => h[0]));
    // Named at the top edge, or at the bottom where a fire's label (above its dot) would
    // cover the name.
    const below = fireGrids.has(grid);
    const edge = below ? Math.max(...hull.map((h) => h[1])) + 16 : Math.min(...hull.map((h) => h[1])) - 4;
    grids.append(node('text', { class: 'grid-label', x: ((left + right) / 2).toFixed(1), y: edge.toFixed(1), 'text-anchor': 'middle', 'data-grid': grid }, grid));
  }
  svg.append(grids);
  // Quiet buildings first so that buildings with cases are drawn on top.
  const ordered = [...state.buildings].sort((a, b) => (worst.has(a.id) ? 1 : 0) - (worst.has(b.id) ? 1 : 0));
  for (const b of ordered) {
    const c = worst.get(b.id);
    const fire = c?.severity === 'fire';
    const [cx, cy] = at(b.lon, b.lat);
    const group = node('g', { class: `building ${c ? 'has-case' : 'quiet'}`, 'data-building': b.id });
    const dot = node('circle', { cx: cx.toFixed(1), cy: cy.toFixed(1), r: c ? (fire ? 16 : 8) : 4, fill: FILL[colourClass(c)] });
    if (fire) dot.classList.add('fire');
    dot.dataset.building = b.id;
    dot.append(node('title', {}, `${b.id} ${b.address}${c ? ` · #${c.id} ${t(`sev_${c.severity}`)}` : ''}`));
    if (c && svg.id === 'map') group.addEventListener('click', () => openCase(c.id));
    group.append(dot);
    // Every building has a label: always shown with an open case (a fire's with its case
    // number, above its dot so neighbours do not overlap), on hover or when zoomed in for
    // the quiet ones.
    const label = node('text', { class: `label building-label ${colourClass(c)}` },
      fire ? `${b.id} ${t('sev_fire')} #${c.id}` : b.id);
    label.setAttribute('x', (cx + (fire ? 0 : c ? 14 : 8)).toFixed(1));
    label.setAttribute('y', (cy + (fire ? -24 : 7)).toFixed(1));
    // Near the map's left or right edge a fire's label grows inwards, so it is not cut off.
    if (fire) label.setAttribute('text-anchor', cx < width / 4 ? 'start' : cx > (width * 3) / 4 ? 'end' : 'middle');
    group.append(label);
    svg.append(group);
  }
  if (svg.basemap) {
    // The map zooms and pans; from zoom 18 (a building a few dozen pixels across) every
    // building's label shows.
    svg.style.setProperty('--zoom', 1);
    svg.classList.toggle('zoomed', svg.basemap.getZoom() >= 18);
  } else {
    enableZoom(svg);
  }
}

// ---- basemap ----

// A basemap under the village map when the gateway has one configured (`[console.basemap]`):
// MapLibre GL and the PMTiles reader, both served by the gateway, load only then. Without
// WebGL, or if the style cannot load, the map stays the buildings' scatter; the frame's
// data-basemap says which (loading, loaded, failed).
async function loadBasemap() {
  let config;
  try {
    config = await (await fetch('/console/basemap.json')).json();
  } catch {
    return;
  }
  if (!config.pmtiles && !config.style) return;
  const frames = state.wall ? [$('#map-frame'), $('#wall-map-frame')] : [$('#map-frame')];
  for (const frame of frames) frame.dataset.basemap = 'loading';
  try {
    await loadScript(config.maplibre);
    await loadScript(config.pmtiles_js);
    const css = el('link', { rel: 'stylesheet', href: config.css });
    document.head.append(css);
    maplibregl.setWorkerUrl(config.worker);
    const protocol = new pmtiles.Protocol();
    maplibregl.addProtocol('pmtiles', protocol.tile);
    const style = await basemapStyle(config, protocol);
    for (const frame of frames) attachBasemap(frame, style);
  } catch (error) {
    for (const frame of frames) frame.dataset.basemap = 'failed';
    console.warn('basemap not shown:', error);
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = el('script', { src });
    script.addEventListener('load', resolve);
    script.addEventListener('error', () => reject(new Error(`${src} did not load`)));
    document.head.append(script);
  });
}

// The configured style, or one made for the archive: a raster archive as it is, a vector
// archive as the outlines of its layers (a style for it is better; see the gateway README).
async function basemapStyle(config, protocol) {
  if (config.style) return new URL(config.style, location.href).href;
  const url = new URL(config.pmtiles, location.href).href;
  const archive = new pmtiles.PMTiles(url);
  protocol.add(archive);
  const header = await archive.getHeader();
  const source = { type: header.tileType === pmtiles.TileType.Mvt ? 'vector' : 'raster', url: `pmtiles://${url}` };
  let layers;
  if (source.type === 'raster') {
    source.tileSize = 256;
    layers = [{ id: 'basemap', type: 'raster', source: 'basemap' }];
  } else {
    const metadata = await archive.getMetadata();
    layers = (metadata.vector_layers || []).map((layer) => ({
      id: `basemap-${layer.id}`, type: 'line', source: 'basemap', 'source-layer': layer.id,
      paint: { 'line-color': '#9e9e9e', 'line-width': 0.8 },
    }));
  }
  return { version: 8, sources: { basemap: source }, layers: [{ id: 'paper', type: 'background', paint: { 'background-color': '#f5f3ef' } }, ...layers] };
}

function attachBasemap(frame, style) {
  const svg = frame.querySelector('svg');
  const container = el('div', { className: 'basemap' });
  frame.prepend(container);
  frame.classList.add('with-basemap');
  const map = new maplibregl.Map({ container, style, attributionControl: { compact: true }, dragRotate: false, pitchWithRotate: false });
  map.touchZoomRotate.disableRotation();
  svg.basemap = map;
  let frameRequested = false;
  const redraw = () => {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => { frameRequested = false; if (state.buildings.length) drawMap(svg); });
  };
  map.on('move', redraw);
  map.on('resize', redraw);
  map.on('error', (event) => { if (frame.dataset.basemap !== 'loaded') console.warn('basemap:', event.error); });
  map.once('load', () => { fitVillage(svg); redraw(); });
  map.once('idle', () => { frame.dataset.basemap = 'loaded'; });
}

// The whole village in view.
function fitVillage(svg) {
  if (!svg.basemap || !state.buildings.length) return;
  const lats = state.buildings.map((b) => b.lat);
  const lons = state.buildings.map((b) => b.lon);
  svg.basemap.fitBounds([[Math.min(...lons), Math.min(...lats)], [Math.max(...lons), Math.max(...lats)]], { padding: 40, animate: false });
}

// Zoom with the wheel around the pointer, pan by dragging, back to the whole village with a
// double click. Labels and outlines keep their size on screen (the CSS divides them by
// --zoom) while the buildings spread apart, and from twice the size every building's label
// shows.
function enableZoom(svg) {
  if (svg.dataset.zoomable) return;
  svg.dataset.zoomable = '1';
  const full = { x: 0, y: 0, w: 1000, h: 700 };
  let view = { ...full };
  const apply = () => {
    svg.setAttribute('viewBox', `${view.x} ${view.y} ${view.w} ${view.h}`);
    const zoom = full.w / view.w;
    svg.style.setProperty('--zoom', zoom);
    svg.classList.toggle('zoomed', zoom >= 2);
  };
  const toSvg = (event) => {
    const r = svg.getBoundingClientRect();
    return [view.x + ((event.clientX - r.left) / r.width) * view.w, view.y + ((event.clientY - r.top) / r.height) * view.h];
  };
  svg.addEventListener('wheel', (event) => {
    event.preventDefault();
    const [px, py] = toSvg(event);
    const f = Math.min(Math.max(event.deltaY > 0 ? 1.25 : 0.8, full.w / 16 / view.w), full.w / view.w);
    view = { x: px - (px - view.x) * f, y: py - (py - view.y) * f, w: view.w * f, h: view.h * f };
    apply();
  }, { passive: false });
  let drag = null;
  svg.addEventListener('pointerdown', (event) => { drag = toSvg(event); });
  svg.addEventListener('pointermove', (event) => {
    if (!drag || !event.buttons) return;
    const [px, py] = toSvg(event);
    view = { ...view, x: view.x - (px - drag[0]), y: view.y - (py - drag[1]) };
    apply();
  });
  svg.addEventListener('pointerup', () => { drag = null; });
  svg.addEventListener('dblclick', () => { view = { ...full }; apply(); });
  svg.zoomTo = (factor) => {
    view = { x: 500 - 500 / factor, y: 350 - 350 / factor, w: 1000 / factor, h: 700 / factor };
    apply();
  };
  apply();
}

function listBuildings() {
  const worst = worstByBuilding();
  const body = $('#buildings tbody');
  body.replaceChildren();
  const rows = [...state.buildings].sort((a, b) =>
    (SEVERITY_RANK[worst.get(b.id)?.severity] || 0) - (SEVERITY_RANK[worst.get(a.id)?.severity] || 0)
    || a.id.localeCompare(b.id));
  for (const b of rows) {
    const c = worst.get(b.id);
    const row = el('tr', { className: colourClass(c) },
      el('td', {}, `${b.id} ${b.address}`), el('td', {}, b.grid),
      el('td', {}, `${b.detectors}/${b.cameras}/${b.water_sensors}`),
      el('td', {}, c ? `#${c.id} ${t(`sev_${c.severity}`)} · ${t(`stage_${c.stage}`)}` : t('quiet')));
    row.dataset.building = b.id;
    if (c) row.addEventListener('click', () => openCase(c.id));
    body.append(row);
  }
}

// ---- live feed ----

function beep() {
  if (!state.sound) return;
  try {
    state.audio = state.audio || new AudioContext();
    const osc = state.audio.createOscillator();
    const gain = state.audio.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.2;
    osc.connect(gain).connect(state.audio.destination);
    osc.start();
    osc.stop(state.audio.currentTime + 0.25);
  } catch (_) { /* no audio device: the flash still shows */ }
}

function setLive(up) {
  const badge = $('#live');
  badge.textContent = t(up ? 'live' : 'offline_feed');
  badge.classList.toggle('down', !up);
  badge.dataset.up = up;
}

function onTransition(entry) {
  if (LOUD.has(entry.kind.transition) && !entry.drill) {
    state.fresh.add(entry.case);
    beep();
  }
  refreshSoon();
}

async function follow() {
  for (;;) {
    try {
      const res = await fetch('/api/v1/events', { headers: { Authorization: `Bearer ${state.token}` } });
      if (!res.ok) throw new Error(`${res.status}`);
      setLive(true);
      // Whatever happened while the feed was down is in the list now.
      refreshSoon();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (name === 'transition' && data.length) onTransition(JSON.parse(data.join('\n')));
        }
      }
    } catch (_) { /* reconnect below */ }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// ---- firmware rollout ----

// A device's state in a rollout (gateway/src/firmware/rollout.rs, `DeviceState::as_str`), as
// the bar and the filter group them; a state this console does not know counts as in progress.
const FW_GROUP = { waiting: 'waiting', offered: 'active', transferring: 'active', committed: 'active', trial: 'active', booted: 'booted' };
const fwGroup = (s) => FW_GROUP[s] || (String(s).startsWith('failed') ? 'failed' : 'active');
// Rows in this order: the failed first (someone has to go), then the ones on their way, then
// the waiting, then the updated; the bar reads left to right from done to not begun.
const FW_ROW_ORDER = ['failed', 'active', 'waiting', 'booted'];
const FW_BAR_ORDER = ['booted', 'failed', 'active', 'waiting'];
// Every state in the order a device passes them, for the counts.
const FW_STATES = ['waiting', 'offered', 'transferring', 'committed', 'trial', 'booted', 'failed_refused',
  'failed_bad_digest', 'failed_rolled_back', 'failed_oversized', 'failed_silent', 'failed_downgrade'];
// Rows drawn at a time: a rollout is up to thousands of devices, and a table of all of them,
// redrawn at every reading, would be thousands of rows nobody reads, on a phone too; the
// failed come first, the rest are counted and a button shows more.
const FW_PAGE = 200;
// How often the view reads the rollout while it is on screen. No event stream carries
// rollout progress, and the gateway writes it at most once a second (the driver's reload
// tick); one read of a 6,000-device rollout is some 350 KB (about 59 bytes of JSON a device
// mid-transfer), so a reading every 5 s is some 70 KB/s while the view is open, and a
// device's transfer (about 43 s for a real image, ARCHITECTURE.md) still shows moving.
const FW_POLL_MS = 5000;

function fwStateName(s) {
  return TEXT[state.lang][`fw_st_${s}`] ?? s;
}

function bytes(n) {
  return Number(n).toLocaleString(state.lang === 'zh' ? 'zh-CN' : 'en-GB');
}

function percent(share) {
  return `${(share * 100).toFixed(share > 0 && share < 0.1 ? 1 : 0)} %`;
}

async function loadRollout() {
  if (state.fwLoading) return;
  state.fwLoading = true;
  try {
    state.fw = await api('/api/v1/firmware/rollout');
    state.fwError = null;
    state.fwLoaded = true;
  } catch (error) {
    if (error.status === 404) {
      // 404: no rollout has been published, or the gateway has none running.
      state.fw = null;
      state.fwError = null;
      state.fwLoaded = true;
    } else {
      // A refusal or a lost connection: say so; the last rollout read stays on screen.
      state.fwError = error;
    }
  } finally {
    state.fwLoading = false;
  }
  renderRollout();
}

// Reads the rollout now and every FW_POLL_MS while the view is shown (not while the tab is in
// the background); stops when another view is chosen.
function followRollout(on) {
  clearInterval(state.fwTimer);
  state.fwTimer = null;
  if (!on) return;
  loadRollout();
  state.fwTimer = setInterval(() => { if (!document.hidden) loadRollout(); }, FW_POLL_MS);
}

function renderRollout() {
  const view = $('#firmware-view');
  const r = state.fw;
  const error = state.fwError;
  const forbidden = error?.status === 403;
  $('#fw-error').textContent = forbidden ? t('fw_forbidden') : error ? errorText(error) : '';
  $('#fw-none').hidden = forbidden || !state.fwLoaded || !!r;
  $('#fw-rollout').hidden = forbidden || !r;
  if (forbidden) view.dataset.state = 'forbidden';
  else if (!state.fwLoaded) view.dataset.state = 'loading';
  else if (!r) view.dataset.state = 'none';
  else view.dataset.state = r.done ? 'done' : r.paused ? 'paused' : 'running';
  if (forbidden || !r) return;
  view.dataset.rollout = r.id;
  view.dataset.updated = r.updated_ms;

  $('#fw-title').textContent = `${t('fw_rollout')} ${r.version}`;
  $('#fw-id').textContent = `${t('fw_id')} ${r.id}`;
  const why = r.paused && !r.done && r.paused_by ? `${t('p_colon')}${TEXT[state.lang][`fw_paused_${r.paused_by}`] ?? r.paused_by}` : '';
  $('#fw-state').textContent = `${t(r.done ? 'fw_done' : r.paused ? 'fw_paused' : 'fw_running')}${why}`;
  $('#fw-state').className = `fw-${view.dataset.state}`;
  const [started, waves] = r.waves;
  $('#fw-waves').textContent = `${t('fw_waves')} ${started} / ${waves}`;
  const failures = $('#fw-failures');
  if (typeof r.max_failure_share === 'number' && typeof r.failure_share === 'number') {
    failures.textContent = `${t('fw_failure_share')} ${percent(r.failure_share)}${t('p_open')}${t('fw_threshold')} ${percent(r.max_failure_share)}${t('p_close')}`;
    failures.classList.toggle('over', r.failure_share > r.max_failure_share);
  } else {
    failures.textContent = '';
  }
  $('#fw-updated').textContent = `${t('fw_updated')} ${fmtTime(r.updated_ms)}`;

  // Counts by state, the API's own; the bar and the filter by group.
  const counts = r.counts || {};
  const total = Object.values(counts).reduce((a, n) => a + n, 0);
  const groups = { booted: 0, failed: 0, active: 0, waiting: 0 };
  for (const [s, n] of Object.entries(counts)) groups[fwGroup(s)] += n;
  $('#fw-bar').replaceChildren(...FW_BAR_ORDER.filter((g) => groups[g] > 0).map((g) => {
    const seg = el('div', { className: `seg fw-${g}`, title: `${t(`fw_g_${g}`)} ${groups[g]}` });
    seg.style.width = `${(groups[g] / total) * 100}%`;
    seg.dataset.group = g;
    seg.dataset.count = groups[g];
    return seg;
  }));
  const known = FW_STATES.filter((s) => counts[s] > 0);
  const other = Object.keys(counts).filter((s) => !FW_STATES.includes(s) && counts[s] > 0);
  $('#fw-counts').replaceChildren(...[...known, ...other].map((s) => {
    const item = el('li', { className: `fw-${fwGroup(s)}` }, el('span', {}, fwStateName(s)), ' ', el('strong', {}, String(counts[s])));
    item.dataset.state = s;
    item.dataset.count = counts[s];
    // A count is also the way to see its devices.
    item.addEventListener('click', () => { state.fwFilter = s; state.fwShown = FW_PAGE; renderRollout(); });
    return item;
  }), el('li', { className: 'fw-total' }, `${t('fw_total')} ${total}`));

  const choices = [['all', t('fw_all'), total], ...FW_ROW_ORDER.map((g) => [g, t(`fw_g_${g}`), groups[g]]),
    ...[...known, ...other].filter((s) => fwGroup(s) === 'failed').map((s) => [s, `· ${fwStateName(s)}`, counts[s]])];
  if (!choices.some(([value]) => value === state.fwFilter)) choices.push([state.fwFilter, fwStateName(state.fwFilter), 0]);
  const select = $('#fw-filter');
  const key = JSON.stringify([state.lang, choices]);
  // Rebuilt only when the choices changed, so that a refresh does not close an open list.
  if (select.dataset.key !== key) {
    select.dataset.key = key;
    select.replaceChildren(...choices.map(([value, label, n]) => el('option', { value }, `${label} (${n})`)));
  }
  select.value = state.fwFilter;

  const filter = state.fwFilter;
  const rank = (d) => FW_ROW_ORDER.indexOf(fwGroup(d.state));
  // Array.prototype.sort is stable: within a group the rollout's own order (canaries first).
  const rows = (r.devices || []).filter((d) => filter === 'all' || d.state === filter || fwGroup(d.state) === filter)
    .sort((a, b) => rank(a) - rank(b));
  const shown = rows.slice(0, state.fwShown || FW_PAGE);
  $('#fw-devices tbody').replaceChildren(...shown.map((d) => fwRow(d, r.image_bytes)));
  $('#fw-no-match').hidden = rows.length > 0;
  const rest = rows.length - shown.length;
  $('#fw-more').hidden = rest <= 0;
  $('#fw-more').dataset.rest = rest;
  $('#fw-more span').textContent = t('fw_more').replace('{n}', rest);
  $('#fw-show-more').textContent = t('fw_show_more').replace('{n}', Math.min(rest, FW_PAGE));
}

// One device's row. Its id is whatever the gateway was given: text only, never markup.
function fwRow(d, imageBytes) {
  const progress = el('td', { className: 'fw-offset' });
  if (d.state === 'waiting' || d.state === 'booted') {
    progress.textContent = '—';
  } else if (imageBytes > 0) {
    const bar = el('progress', { max: imageBytes, value: Math.min(d.offset, imageBytes) });
    progress.append(bar, ` ${percent(Math.min(d.offset / imageBytes, 1))} · ${bytes(d.offset)} / ${bytes(imageBytes)} B`);
  } else {
    progress.textContent = `${bytes(d.offset)} B`;
  }
  const row = el('tr', { className: `fw-${fwGroup(d.state)}` },
    el('td', { className: 'fw-device' }, String(d.device)), el('td', {}, fwStateName(d.state)), progress);
  row.dataset.device = d.device;
  row.dataset.state = d.state;
  return row;
}

// ---- views ----

// ---- wall mode: the command centre's big screen ----

function renderWall() {
  if (!state.wall) return;
  const open = state.cases;
  for (const stage of ['warning', 'response', 'handling']) {
    $(`#wall-stages [data-stage=${stage}] .n`).textContent = open.filter((c) => c.stage === stage).length;
  }
  const fires = openFires();
  const box = $('#wall-fires');
  box.replaceChildren();
  for (const c of fires) {
    const b = state.buildings.find((x) => x.id === c.location.building);
    const card = el('div', { className: `fire${c.stage === 'warning' ? ' unacked' : ''}` },
      el('div', { className: 'fire-what' }, `${t('sev_fire')} #${c.id} · ${c.unplaced ? where(c) : c.location.building}`),
      el('div', { className: 'fire-address' }, b ? b.address : ''),
      el('div', { className: 'fire-grid' },
        `${t('grid')} ${c.location.grid || '—'} · ${t('stage')} ${t(`stage_${c.stage}`)} · ${t('at_level')} ${t(`level_${c.level}`)}`),
      el('div', { className: 'fire-since' }),
      el('div', { className: 'due' }));
    card.dataset.case = c.id;
    card.dataset.stage = c.stage;
    box.append(card);
  }
  $('#wall-no-fire').hidden = fires.length > 0;
  wallTick();
}

function wallTick() {
  if (!state.wall) return;
  const now = Date.now();
  $('#wall-clock').textContent = state.timeZone ? `${fmtTime(now)} ${state.timeZone}` : '';
  document.querySelectorAll('#wall-fires .fire').forEach((card) => {
    const c = state.cases.find((x) => String(x.id) === card.dataset.case);
    if (!c) return;
    card.querySelector('.fire-since').textContent = `${t('since_alarm')} ${span(Math.round((now - c.opened) / 1000))}`;
    const { text, late } = countdown(c);
    card.querySelector('.due').textContent = text;
    card.querySelector('.due').classList.toggle('overdue', late);
  });
  const late = state.cases.filter((c) => countdown(c).late);
  $('#wall-stages [data-stage=overdue] .n').textContent = late.length;
  const list = $('#wall-overdue');
  list.replaceChildren(...late.map((c) => {
    const item = el('li', { className: `sev-${c.severity}` },
      el('strong', {}, `${t(`sev_${c.severity}`)} #${c.id}`), ` ${where(c)} · ${t(`stage_${c.stage}`)} · `,
      el('span', { className: 'overdue' }, countdown(c).text));
    item.dataset.case = c.id;
    return item;
  }));
  $('#wall-no-overdue').hidden = late.length > 0;
}

function showView(view) {
  $('#wall').hidden = view !== 'wall';
  $('#cases-view').hidden = view !== 'cases';
  $('#map-view').hidden = view !== 'map';
  // A map made while its frame was hidden has no size until told.
  if (view === 'map') $('#map').basemap?.resize();
  $('#detail').hidden = view !== 'detail';
  if (view !== 'detail') state.detail = null;
  $('#firmware-view').hidden = view !== 'firmware';
  if ((view === 'firmware') !== !!state.fwTimer) followRollout(view === 'firmware');
  document.querySelectorAll('nav button').forEach((b) => b.classList.toggle('active', b.dataset.view === view));
}

async function start() {
  // Without its words the console still works (showing the API's names); it says nothing
  // less about a fire.
  await loadGlossary().catch(() => {});
  translate();
  $('#lang').addEventListener('click', () => {
    state.lang = state.lang === 'zh' ? 'en' : 'zh';
    localStorage.setItem('firegrid.lang', state.lang);
    translate();
    showWho();
    if ($('#live').dataset.up) setLive($('#live').dataset.up === 'true');
    renderCases();
    renderMap();
    if (state.detail) renderDetail();
    renderBanner();
    if (state.fwLoaded || state.fwError) renderRollout();
  });
  $('#sound').addEventListener('click', () => { state.sound = !state.sound; translate(); });
  $('#logout').addEventListener('click', signOut);
  $('#back').addEventListener('click', () => showView('cases'));
  document.querySelectorAll('nav button').forEach((b) => b.addEventListener('click', () => showView(b.dataset.view)));
  $('#login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    $('#login-error').textContent = '';
    signIn($('#token').value.trim());
  });
  wireActions();
  $('#fw-filter').addEventListener('change', (event) => { state.fwFilter = event.target.value; state.fwShown = FW_PAGE; renderRollout(); });
  $('#fw-show-more').addEventListener('click', () => { state.fwShown = (state.fwShown || FW_PAGE) + FW_PAGE; renderRollout(); });
  setInterval(tick, 1000);
  setInterval(sirenLoop, 2000);
  // Browsers start sound only after a gesture: any click on the page lets the siren play.
  document.addEventListener('click', () => { if (state.audio?.state === 'suspended') state.audio.resume().catch(() => {}); });
  // A token in the URL fragment (the demo prints such a link) signs in at once; the fragment
  // never reaches the server and is removed from the address bar.
  // Wall mode: /console/wall, or #wall on any console address.
  state.wall = location.pathname === '/console/wall' || location.hash === '#wall';
  document.body.classList.toggle('wall', state.wall);
  if (state.wall) {
    // The wall has no person in front of it to reload it: the list is read anew every minute
    // as well as live, in case the event stream dies without a word.
    setInterval(() => { if (state.me) loadCases().catch(() => {}); }, 60000);
  }
  const fragment = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fragment) history.replaceState(null, '', location.pathname);
  const token = fragment || state.token;
  if (token) signIn(token);
  loadBasemap();
}

start();
