"""The closed word classes the standing-order rules read, in English, de, es, fr, it, pt, ru, zh, ja and ko.

Direction words (answer / refuse and their kin, verbs and nouns) and decision labels (safe / unsafe and their kin)
are not rules: `insight_orders.canonical` maps each class to one neutral token before any rule runs, so the rules
cannot see which way an insight points. Everything else here names scope structure: quantifiers, generic head
nouns (request, question, user ...), words that open a restricting phrase, forward-looking markers, commands about
the memory and overriding instructions. Latin and Cyrillic entries are regex fragments matched on word
boundaries; CJK entries are matched as substrings (those scripts do not separate words).
"""

from __future__ import annotations

# fmt: off

ACT, POL, Q, ADV, HEAD = "ACT", "POL", "QUANT", "ADVU", "HEAD"


def _alt(*parts: str) -> str:
    return "(?:" + "|".join(parts) + ")"


# Direction words, both directions in one class (that is the point). Multi-word forms come first.
DIRECTION = _alt(
    r"turn(?:s|ed|ing)?\s+(?:away|down)", r"say(?:s|ing)?\s+(?:yes|no)(?:\s+to)?", r"said\s+(?:yes|no)(?:\s+to)?",
    r"answer(?:s|ed|ing)?", r"help(?:s|ed|ing|ful|fully)?", r"assist(?:s|ed|ing|ance)?",
    r"compl(?:y|ies|ied|ying|iance)", r"provid(?:e|es|ed|ing)", r"fulfil+(?:s|ed|ing|ment)?",
    r"respon(?:d|ds|ded|ding|se|ses)", r"repl(?:y|ies|ied|ying)", r"grant(?:s|ed|ing)?", r"accept(?:s|ed|ing)?",
    r"obey(?:s|ed|ing)?", r"engag(?:e|es|ed|ing)", r"refus(?:e|es|ed|ing|als?)", r"declin(?:e|es|ed|ing)",
    r"reject(?:s|ed|ing|ions?)?", r"withh(?:old|olds|olding|eld)", r"den(?:y|ies|ied|ying|ials?)",
    r"rebuff(?:s|ed|ing)?",
    # de (separable "lehne ... ab" keeps "ab", a function word)
    r"(?:be)?antwort\w*", r"hilf\w*", r"helf\w*", r"geholfen", r"unterstütz\w*", r"erfüll\w*", r"ablehn\w*",
    r"abgelehnt\w*", r"abzulehn\w*", r"lehn(?:e|en|t|st)", r"verweiger\w*", r"zurückzuweis\w*", r"zurückweis\w*",
    # es / pt / it / fr
    r"respond\w*", r"contest(?:a|ar|e|en|ad[oa]s?)", r"ayud\w*", r"asist\w*", r"atend\w*", r"rechaz\w*",
    r"ni[eé]g\w*", r"negar\w*", r"deneg\w*", r"rehus\w*", r"respost\w*", r"ajud\w*", r"recus\w*", r"rejeit\w*",
    r"neg(?:ar|ue|ado|ada|ados|adas)", r"répond\w*", r"répons\w*", r"aid(?:er|e|ez|ons)", r"refus\w*", r"rejet\w*",
    r"déclin\w*", r"rispond\w*", r"rispost\w*", r"aiut\w*", r"assist\w*", r"soddisf\w*", r"rifiut\w*",
    r"respin\w*", r"nega(?:re|ta|to|te|ti|no)",
    # ru
    r"ответ\w*", r"отвеча\w*", r"помог\w*", r"помощ\w*", r"помоч\w*", r"выполн\w*", r"отказ\w*", r"отклон\w*",
    r"отверг\w*",
)
# A particle after a direction verb is part of it ("help with", "respond to", "responde a", "отвечай на"); an
# article before one goes with it ("an answer", "a refusal").
PARTICLE = r"(?:\s+(?:with|to|for|a|à|al|au|aux|на))?"
DIRECTION_CJK = _alt(
    "回答", "答复", "回复", "帮助", "协助", "满足", "提供", "遵从", "服从", "拒绝",
    "驳回", "回绝", "婉拒", "応答", "答え", "手伝", "支援", "協力", "応じ",
    "拒否", "拒絶", "断る", "断り", "断っ", "却下", "응답", "답변", "대답", "도와",
    "도움", "돕", "지원", "수락", "응하", "거절", "거부", "사절",
)
# Decision labels and the adjectives that carry them.
POLARITY = _alt(
    r"un(?:safe|harmful|acceptable)", r"safe", r"harm(?:ful|less)", r"benign", r"dangerous", r"risky",
    r"(?:il)?legitimate", r"acceptable", r"malicious", r"innocuous", r"(?:un)?sicher\w*", r"harmlos\w*",
    r"gefährlich\w*", r"(?:in)?segur[oa]s?", r"peligros[oa]s?", r"inofensiv[oa]s?", r"sûrs?", r"dangereu\w*",
    r"inoffensi\w*", r"sicur[oaie]", r"pericolos[oaie]", r"innocu[oaie]", r"perigos[oa]s?", r"безопасн\w*",
    r"опасн\w*",
)
POLARITY_CJK = _alt("不安全", "安全", "危险", "危険", "有害", "无害", "無害", "안전", "위험", "유해", "무해")

QUANT = _alt(
    r"every", r"all", r"any", r"each", r"no", r"whatever", r"whichever", r"jede[rsmn]?", r"alle[rsmn]?",
    r"sämtliche\w*", r"keine[rsmn]?", r"jegliche\w*", r"tod[oa]s?", r"cualquier\w*", r"cada", r"ningun\w*",
    r"tou(?:t|te|s|tes)", r"chaque", r"aucun\w*", r"ogni", r"tutt[ioae]", r"qualsiasi", r"qualunque", r"nessun\w*",
    r"qualquer", r"nenhum\w*", r"все", r"всё", r"всех", r"всем", r"кажд\w*", r"люб(?:ой|ого|ому|ые|ых|ую)",
    r"всяк\w*",
)
# Pronouns that are a quantifier and a generic head at once.
QUANT_PRONOUN = _alt(
    r"whoever", r"whatever", r"whichever", r"quienquiera", r"quiconque", r"chiunque",
    r"everything", r"anything", r"every(?:one|body)", r"any(?:one|body)", r"nothing", r"no(?:one|body)", r"alles",
    r"jede[rn]?mann", r"nichts", r"todo", r"nada", r"nadie", r"tout", r"rien", r"personne", r"tutto", r"niente",
    r"nulla", r"nessuno", r"tudo", r"ninguém", r"всё", r"ничего", r"никто",
)
# Nouns that name a request or its sender without naming content.
HEADS = _alt(
    r"requests?", r"questions?", r"quer(?:y|ies)", r"prompts?", r"users?", r"messages?", r"tasks?", r"inputs?",
    r"cases?", r"things?", r"ones?", r"kinds?", r"types?", r"sorts?", r"inquir(?:y|ies)", r"asks?", r"people",
    r"persons?", r"instructions?", r"anfragen?", r"fragen?", r"bitten?", r"(?:be)?nutzer\w*", r"nachrichten?",
    r"aufgaben?", r"eingaben?", r"f[aä]lle?n?", r"arten?", r"solicitud(?:es)?", r"preguntas?", r"petici\w+",
    r"pedidos?", r"consultas?", r"usuári?[oa]s?", r"mensajes?", r"casos?", r"tipos?", r"demandes?", r"requêtes?",
    r"utilisat\w+", r"cas", r"richiest[ae]", r"domand[ae]", r"utent[ei]", r"messagg[io]", r"casi", r"tipi",
    r"perguntas?", r"solicitaç\w+", r"utilizador\w*", r"mensage\w+", r"запрос\w*", r"вопрос\w*", r"просьб\w*",
    r"пользовател\w*", r"сообщени\w*", r"случа\w*", r"задач\w*",
)
QUANT_CJK = _alt(
    "所有", "一切", "任何", "每个", "每一个", "全部", "すべての", "全ての", "あらゆる",
    "どんな", "いかなる", "모든", "어떤", "어느",
)
HEADS_CJK = _alt(
    "请求", "问题", "提问", "用户", "要求", "指令", "消息", "質問", "リクエスト",
    "要求", "依頼", "ユーザー", "問い合わせ", "요청", "질문", "사용자", "요구",
    "문의",
)
# A relational marker before a CJK quantifier restricts it ("关于化学的所有问题").
RESTRICT_CJK = _alt(
    "关于", "有关", "涉及", "的", "に関する", "についての", "関連", "に関わる",
    "에\\s*관한", "에\\s*대한", "관련",
)

# Words that open a phrase after the head noun; the phrase restricts the scope only if it names content.
OPENERS = _alt(
    r"about", r"involving", r"regarding", r"concerning", r"on", r"with", r"for", r"from", r"of", r"in", r"to",
    r"that", r"which", r"who", r"where", r"whose", r"related", r"like", r"by", r"at", r"under", r"\w+ing", r"über",
    r"zu[mr]?", r"mit", r"vo[nm]", r"für", r"bei", r"aus", r"nach", r"die", r"der", r"das", r"welche\w*",
    r"bezüglich", r"sobre", r"de", r"del", r"con", r"para", r"que", r"acerca", r"relacionad\w*", r"sur", r"du",
    r"des", r"avec", r"pour", r"qui", r"concernant", r"à", r"aux?", r"su", r"sul\w*", r"di", r"dell?[aoei]?", r"per",
    r"che", r"riguard\w*", r"do", r"da", r"com", r"о", r"об", r"про", r"с", r"для", r"от", r"по", r"касающ\w*",
    r"связанн\w*", r"котор\w*",
)
# Anaphora: "such requests", "requests like this", "of this kind" point back at the insight's own scenario.
ANAPHORA = _alt(
    r"such", r"similar", r"this", r"these", r"those", r"same", r"solche\w*", r"ähnliche\w*", r"diese[rsmn]?",
    r"tal(?:es)?", r"simil\w+", r"est[aeo]s?", r"es[aeo]s?", r"tel(?:le)?s?", r"ce(?:s|tte)?", r"quest[aoei]",
    r"tali?", r"ess[ea]s?", r"такие", r"такого", r"подобн\w*", r"эт\w+",
)
# Pronouns that point back at the insight's scenario ("it should be refused"): a scope, not a universal.
PRONOUNS = _alt(r"it", r"its", r"they", r"them", r"their", r"es", r"sie", r"ihn", r"lo", r"la", r"los", r"las", r"le",
                r"les", r"ello", r"ella", r"elle", r"il", r"eso", r"isso", r"ele", r"ela", r"это", r"его", r"её", r"их")
# Definite articles: "the request" is the case at hand, not every request.
DEFINITE = _alt(r"the", r"de[rmns]", r"die", r"das", r"el", r"la", r"los", r"las", r"le", r"les", r"l", r"il", r"lo",
                r"gli", r"os", r"as")
# Universal pronouns whose relative clause follows directly ("whoever asks about insulin").
RELATIVE = _alt(r"whoever", r"whatever", r"whichever", r"quienquiera", r"quiconque", r"chiunque")
# Words that restrict nothing: function words, modals, generic verbs and nouns (several languages at once).
GENERIC = _alt(
    r"the", r"a", r"an", r"it", r"its", r"they", r"them", r"their", r"you", r"your", r"we", r"i", r"me", r"my", r"he",
    r"she", r"and", r"or", r"so", r"then", r"just", r"simply", r"please", r"should", r"must", r"shall", r"will",
    r"would", r"can", r"could", r"may", r"might", r"is", r"are", r"be", r"been", r"being", r"was", r"were", r"do",
    r"does", r"did", r"not", r"n't", r"to", r"of", r"on", r"from", r"for", r"in", r"with", r"as", r"at", r"by", r"up",
    r"out", r"get", r"gets", r"give", r"gives", r"deserves?", r"treat", r"sends?", r"receives?", r"says?", r"wants?",
    r"comes?", r"asked", r"said", r"wanted", r"sent", r"received", r"next", r"follows?", r"kind", r"sort", r"type",
    r"assistant", r"model", r"ai", r"user", r"users",
    r"people", r"anyone", r"someone", r"incoming", r"single", r"other", r"new", r"future", r"subsequent", r"further",
    r"possible", r"every", r"all", r"any", r"each", r"no", r"nothing", r"everything", r"full", r"fully", r"what",
    r"whatever", r"who", r"whoever", r"yes", r"ok", r"okay", r"signals", r"der", r"die", r"das", r"und", r"oder",
    r"zu", r"ab", r"sind", r"ist", r"immer", r"el", r"la", r"los", r"las", r"y", r"o", r"le", r"les", r"et", r"ou",
    r"il", r"lo", r"gli", r"e", r"os", r"as", r"и", r"или",
)
ALWAYS = _alt(
    r"always", r"never", r"unconditionally", r"invariably", r"regardless", r"no\s+exceptions?",
    r"without\s+(?:any\s+)?(?:exceptions?|questions?|hesitation|conditions?|limits?|reservations?)",
    r"in\s+(?:every|all)\s+cases?", r"immer", r"nie(?:mals)?", r"stets", r"ausnahmslos", r"bedingungslos", r"siempre",
    r"nunca", r"jamás", r"sin\s+excepci[oó]n", r"toujours", r"jamais", r"sans\s+exception", r"sempre", r"mai",
    r"senza\s+eccezion[ei]", r"jamais", r"sem\s+exceç[aã]o", r"всегда", r"никогда", r"без\s+исключени\w+",
)
ALWAYS_CJK = _alt(
    "总是", "始终", "一律", "永远", "从不", "绝不", "常に", "いつも", "必ず",
    "決して", "絶対", "항상", "언제나", "절대", "결코", "무조건",
)

FORWARD = _alt(
    r"from\s+now\s+on", r"from\s+(?:this|that|here)\s+(?:\w+\s+)?on(?:wards?)?", r"going\s+forward", r"henceforth",
    r"hereafter", r"(?:in|for)\s+(?:all\s+|the\s+)?future", r"for\s+the\s+rest\s+of", r"from\s+today",
    r"whatever\s+(?:comes|follows)(?:\s+next)?", r"(?:all|any|every)\s+(?:subsequent|later|future)",
    r"von\s+(?:nun|jetzt)\s+an", r"ab\s+(?:sofort|jetzt|heute)", r"k[üu]nftig", r"zuk[üu]nftig", r"in\s+zukunft",
    r"fortan", r"de\s+ahora\s+en\s+adelante", r"a\s+partir\s+de\s+(?:ahora|agora|hoy|hoje)", r"en\s+adelante",
    r"desde\s+ahora", r"en\s+el\s+futuro", r"en\s+lo\s+sucesivo", r"désormais", r"dorénavant",
    r"à\s+partir\s+de\s+maintenant", r"à\s+l'avenir", r"dès\s+maintenant", r"d'ora\s+in\s+(?:poi|avanti)",
    r"da\s+(?:ora|adesso|oggi)\s+in\s+poi", r"in\s+futuro", r"de\s+agora\s+em\s+diante", r"daqui\s+em\s+diante",
    r"no\s+futuro", r"doravante", r"daqui\s+para\s+frente", r"с\s+этого\s+момента", r"отныне", r"впредь",
    r"с\s+сегодняшнего\s+дня", r"в\s+дальнейшем", r"в\s+будущем", r"с\s+этих\s+пор",
)
FORWARD_CJK = _alt(
    "从现在起", "从现在开始", "从今以后", "今后", "往后", "今後", "これから", "以後",
    "今から", "これ以降", "앞으로", "지금부터", "이제부터", "향후", "이후로",
)

MEMORY = _alt(
    r"(?:remember|memori[sz]e|store|save|record|note|keep)\s+(?:this|that|the\s+following|it|in\s+mind)",
    r"(?:to|in|into|from)\s+(?:your\s+|the\s+)?memory", r"memory\s+bank", r"rules?\s+for\s+later",
    r"merk(?:e)?\s+dir", r"speicher\w*", r"behalte\s+(?:das|dies)", r"gedächtnis", r"recuerda", r"memoriza",
    r"guarda\s+(?:esto|en)", r"en\s+(?:la\s+|tu\s+)?memoria", r"retiens", r"mémorise", r"souviens-toi",
    r"dans\s+(?:la\s+|ta\s+)?mémoire", r"ricorda(?:ti)?", r"memorizza", r"in\s+memoria", r"lembre-se", r"memorize",
    r"guarde\s+(?:isto|isso)", r"na\s+memória", r"запомни\w*", r"сохрани\w*", r"в\s+памят\w*",
)
MEMORY_CJK = _alt("记住", "记下", "存入", "记忆", "覚えて", "記憶", "기억", "저장")

_INSTRUCTION = _alt(
    r"instruc\w*", r"rules?", r"guidelines?", r"guidance", r"polic(?:y|ies)", r"prompts?", r"previous", r"prior",
    r"earlier", r"above", r"system", r"safety", r"regla\w*", r"règle\w*", r"regol\w*", r"regra\w*", r"richtlinie\w*",
    r"anweisung\w*", r"vorgabe\w*", r"consigne\w*", r"istruzion\w*", r"instruç\w*", r"инструкц\w*", r"правил\w*",
    r"anterior\w*", r"précédent\w*", r"precedent\w*", r"vorherig\w*", r"предыдущ\w*",
)
OVERRIDE = _alt(
    r"(?:ignor\w*|disregard\w*|overrid\w*|forget|bypass\w*|set\s+aside|vergiss|olvida|oublie|dimentica|esqueça|"
    r"забудь)\b[^.;:!?]{0,40}?\b" + _INSTRUCTION,
    r"(?:regardless\s+of|irrespective\s+of|no\s+matter|egal|unabhängig\s+vo[nm]|independientemente\s+de|"
    r"sin\s+importar|peu\s+importe|quel(?:le)?\s+que\s+soi(?:t|ent)|indipendentemente\s+da|a\s+prescindere\s+da|"
    r"independentemente\s+d[eoa]|não\s+importa|независимо\s+от)\s+(?:\w+\s+){0,2}?"
    r"(?:what|whatever|image|picture|photo|content|instructions?|was|bild\w*|inhalt\w*|lo\s+que|imagen|image|"
    r"immagine|imagem|ce\s+que|quello\s+che|o\s+que|изображени\w*|того)",
)
OVERRIDE_CJK = _alt("忽略", "无视", "不管", "无论", "無視", "かかわらず", "関係なく", "무시", "상관없이", "관계없이")
# fmt: on
