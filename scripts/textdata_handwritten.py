"""Hand-written multilingual texts for embg/textdata (read by scripts/make_textdata.py).

PAIRS: per language, (query a user would type, 2-4 sentence passage answering it). Every language
covers the same everyday topics (cooking, travel, health, software, history, weather, finance) with
different facts, so each query has topical neighbours in its own and in other languages.
MIXED: (lang "query-document", query, document) with the query and the passage in different languages.
CALIBRATION_*: texts for quantization calibration, not used anywhere else in the project.
"""

from __future__ import annotations

PAIRS: dict[str, list[tuple[str, str]]] = {
    "ru": [
        ("сколько варить гречку на плите",
         "Гречку промывают, заливают водой в пропорции один к двум и доводят до кипения. Затем огонь "
         "убавляют до минимума и варят под крышкой около пятнадцати минут, пока вода не впитается. "
         "После этого кастрюлю лучше укутать полотенцем ещё на десять минут, чтобы крупа стала рассыпчатой."),
        ("как слепить пельмени чтобы не разваливались",
         "Тесто для пельменей замешивают из муки, воды, яйца и щепотки соли и дают ему отдохнуть полчаса. "
         "Края кружочков нужно плотно защипывать и не допускать попадания фарша на край, иначе шов "
         "разойдётся при варке. Опускайте пельмени в уже кипящую подсоленную воду и осторожно помешивайте."),
        ("нужна ли виза в Грузию для россиян",
         "Граждане России могут находиться в Грузии без визы до одного года. На границе достаточно "
         "заграничного паспорта, а при въезде по суше иногда спрашивают страховку на автомобиль. "
         "Для работы или учёбы дольше этого срока оформляют вид на жительство."),
        ("что взять с собой в поезд на двое суток",
         "В долгую поездку на поезде стоит взять сменную одежду, тапочки, кружку и влажные салфетки. "
         "Из еды удобны продукты, которые не портятся без холодильника: хлеб, сыр, фрукты и лапша быстрого "
         "приготовления, ведь кипяток в вагоне есть всегда. Зарядное устройство с длинным проводом тоже пригодится."),
        ("как быстро вылечить простуду у взрослого",
         "Простуда обычно проходит сама за семь-десять дней, и лекарства лишь облегчают симптомы. "
         "Помогают обильное тёплое питьё, отдых и промывание носа солевым раствором. Если температура "
         "держится выше 38,5 больше трёх дней или появилась одышка, нужно обратиться к врачу."),
        ("как настроить резервное копирование фотографий с телефона",
         "В настройках облачного хранилища включите автозагрузку фото и видео, желательно только через Wi-Fi. "
         "Раз в несколько месяцев полезно дополнительно копировать архив на внешний диск. "
         "Так снимки сохранятся, даже если телефон потеряется или сломается."),
        ("почему программа на питоне пишет ModuleNotFoundError",
         "Ошибка ModuleNotFoundError означает, что интерпретатор не нашёл пакет в своём окружении. "
         "Чаще всего пакет установлен в другое виртуальное окружение или для другой версии Python. "
         "Проверьте, какой интерпретатор запущен, и установите пакет командой python -m pip install."),
        ("когда основали Санкт-Петербург",
         "Санкт-Петербург был основан Петром Первым 27 мая 1703 года в устье Невы. Первой постройкой "
         "стала Петропавловская крепость на Заячьем острове. С 1712 года и почти два столетия город был "
         "столицей Российского государства."),
        ("почему весной в Москве так часто идёт мокрый снег",
         "В марте над Москвой встречаются тёплые воздушные массы с запада и холодные с севера. "
         "Температура у земли держится около нуля, поэтому осадки выпадают мокрым снегом или дождём со снегом. "
         "Устойчивое тепло обычно приходит только во второй половине апреля."),
        ("как накопить на отпуск с небольшой зарплатой",
         "Удобнее всего сразу после зарплаты переводить фиксированную сумму на отдельный накопительный счёт. "
         "Даже десять процентов дохода за год складываются в заметную сумму, а проценты банка немного её увеличат. "
         "Помогает и запись расходов: она показывает, на чём можно сэкономить без потери удобства."),
        ("что такое налоговый вычет за лечение",
         "Социальный налоговый вычет позволяет вернуть часть уплаченного подоходного налога за платное лечение "
         "и лекарства. Для этого нужны справка об оплате медицинских услуг, договор с клиникой и декларация. "
         "Подать документы можно в течение трёх лет после года оплаты."),
    ],
    "de": [
        ("wie mache ich Spätzle ohne Spätzlehobel",
         "Für Spätzle verrührt man Mehl, Eier, eine Prise Salz und etwas Wasser zu einem zähen Teig, der "
         "Blasen wirft. Ohne Hobel streicht man den Teig dünn auf ein nasses Brett und schabt ihn mit einem "
         "Messer in Streifen direkt ins kochende Salzwasser. Sobald die Spätzle oben schwimmen, sind sie fertig."),
        ("Sauerteig ansetzen Anleitung",
         "Mische am ersten Tag je 50 Gramm Roggenmehl und lauwarmes Wasser in einem Glas und lasse es locker "
         "abgedeckt bei Zimmertemperatur stehen. An den folgenden vier bis fünf Tagen fütterst du den Ansatz "
         "täglich mit derselben Menge Mehl und Wasser. Riecht er säuerlich und verdoppelt sich in wenigen "
         "Stunden, ist er backfertig."),
        ("Deutschlandticket gilt es auch im ICE",
         "Das Deutschlandticket gilt bundesweit in Bussen, Straßenbahnen, U- und S-Bahnen sowie in den "
         "Regionalzügen. Fernverkehrszüge wie ICE und IC sind nicht eingeschlossen, von wenigen regionalen "
         "Ausnahmen abgesehen. Wer schneller fahren will, braucht dafür eine reguläre Fahrkarte."),
        ("wie viel Flüssigkeit darf ins Handgepäck",
         "Flüssigkeiten im Handgepäck müssen in Behältern von höchstens 100 Millilitern stecken. Alle Behälter "
         "kommen zusammen in einen durchsichtigen, wiederverschließbaren Beutel mit maximal einem Liter Inhalt. "
         "Babynahrung und ärztlich verordnete Medikamente sind von der Regel ausgenommen."),
        ("was hilft gegen Rückenschmerzen vom Sitzen",
         "Bei Rückenschmerzen durch langes Sitzen hilft vor allem Bewegung: jede halbe Stunde kurz aufstehen "
         "und ein paar Schritte gehen. Der Bildschirm sollte auf Augenhöhe stehen und die Füße flach auf dem "
         "Boden. Regelmäßiges Training der Rumpfmuskulatur beugt neuen Beschwerden vor."),
        ("sicheres Passwort merken Tipps",
         "Ein gutes Passwort ist lang, etwa ein Satz aus vier oder fünf zufälligen Wörtern. Für jeden Dienst "
         "sollte ein eigenes Passwort verwendet werden, damit ein Datenleck nicht alle Konten gefährdet. "
         "Ein Passwortmanager speichert sie verschlüsselt, sodass man sich nur noch ein Hauptpasswort merken muss."),
        ("git Commit rückgängig machen der schon gepusht ist",
         "Einen bereits gepushten Commit macht man am sichersten mit git revert rückgängig. Der Befehl erzeugt "
         "einen neuen Commit, der die Änderungen umkehrt, ohne die Historie umzuschreiben. So bekommen Kolleginnen "
         "und Kollegen beim nächsten Pull keine Konflikte durch eine veränderte Vergangenheit."),
        ("wann fiel die Berliner Mauer",
         "Die Berliner Mauer fiel in der Nacht vom 9. auf den 10. November 1989, nachdem die DDR-Führung "
         "überraschend die Reisefreiheit verkündet hatte. Tausende Menschen strömten zu den Grenzübergängen, "
         "bis die Wachen die Schlagbäume öffneten. Knapp ein Jahr später, am 3. Oktober 1990, wurde Deutschland "
         "wiedervereinigt."),
        ("warum ist es an der Nordsee so windig",
         "An der Nordsee gibt es kaum Hindernisse, die den Wind bremsen, denn über dem flachen Wasser und der "
         "Küste fehlen Berge und Wälder. Außerdem ziehen die meisten Tiefdruckgebiete vom Atlantik genau über "
         "diese Region. Deshalb stehen dort auch so viele Windkraftanlagen."),
        ("lohnt sich ein ETF Sparplan für Anfänger",
         "Ein ETF-Sparplan investiert monatlich einen festen Betrag in einen breit gestreuten Indexfonds. "
         "Die Kosten sind niedrig und man muss keine einzelnen Aktien auswählen. Wichtig ist ein langer "
         "Anlagehorizont von mindestens zehn Jahren, weil die Kurse zwischendurch deutlich fallen können."),
        ("Steuererklärung Frist 2024",
         "Wer zur Abgabe verpflichtet ist und die Erklärung selbst erstellt, hat dafür bis Ende Juli des "
         "Folgejahres Zeit. Mit einem Steuerberater oder Lohnsteuerhilfeverein verlängert sich die Frist "
         "deutlich. Wer freiwillig abgibt, kann das sogar vier Jahre rückwirkend tun."),
    ],
    "fr": [
        ("pourquoi laisser reposer la pâte à crêpes",
         "Laisser reposer la pâte à crêpes une heure permet à l'amidon de la farine de gonfler et aux bulles "
         "d'air de s'échapper. La pâte devient plus lisse et les crêpes se déchirent moins à la cuisson. "
         "Si vous êtes pressé, une pâte bien fouettée sans grumeaux donne déjà un bon résultat."),
        ("recette ratatouille au four",
         "Coupez aubergines, courgettes, poivrons et tomates en rondelles fines, puis disposez-les en rangées "
         "serrées sur un lit d'oignons fondus. Arrosez d'huile d'olive, ajoutez de l'ail et du thym, et "
         "enfournez à 180 degrés pendant environ une heure. La ratatouille est encore meilleure réchauffée le lendemain."),
        ("comment composter son billet de train",
         "Les billets de TER achetés au guichet sans date précise doivent souvent être validés avant de monter "
         "dans le train. Les bornes de compostage se trouvent à l'entrée des quais. Les billets électroniques "
         "et ceux de TGV, liés à un train et une date, n'ont pas besoin d'être compostés."),
        ("quels documents pour louer une voiture en Europe",
         "Pour louer une voiture, il faut un permis de conduire valide, une pièce d'identité et une carte "
         "bancaire au nom du conducteur pour la caution. Certaines agences exigent un permis obtenu depuis "
         "au moins un ou deux ans. Vérifiez aussi si l'assurance couvre les franchises en cas d'accident."),
        ("combien d'heures de sommeil faut-il à un adulte",
         "Un adulte a besoin en général de sept à neuf heures de sommeil par nuit. Se coucher et se lever à "
         "des heures régulières aide l'horloge interne à se stabiliser. Les écrans le soir et la caféine "
         "après seize heures retardent souvent l'endormissement."),
        ("mon ordinateur portable chauffe beaucoup que faire",
         "Un ordinateur portable qui chauffe a souvent des ventilateurs encrassés par la poussière. Posez-le "
         "sur une surface dure plutôt que sur un lit ou un coussin, pour que l'air circule. Vérifiez aussi "
         "dans le gestionnaire des tâches si un programme utilise le processeur en permanence."),
        ("différence entre une liste et un tuple en Python",
         "En Python, une liste est modifiable : on peut ajouter, retirer ou remplacer des éléments. Un tuple "
         "est immuable, ce qui le rend utilisable comme clé de dictionnaire et un peu plus léger en mémoire. "
         "On choisit le tuple pour des données fixes, comme des coordonnées."),
        ("qui a construit la tour Eiffel et quand",
         "La tour Eiffel a été construite par l'entreprise de Gustave Eiffel entre 1887 et 1889 pour "
         "l'Exposition universelle de Paris. Haute de plus de trois cents mètres, elle fut la plus haute "
         "structure du monde pendant quarante ans. Beaucoup d'artistes la trouvaient laide à l'époque."),
        ("pourquoi fait-il si doux en Bretagne l'hiver",
         "La Bretagne profite de l'influence de l'océan Atlantique et du courant du Gulf Stream, qui "
         "réchauffent l'air en hiver. Les gelées y sont rares près des côtes, même en janvier. En revanche, "
         "le vent et la pluie fine sont fréquents."),
        ("comment ouvrir un livret A",
         "Le livret A s'ouvre dans n'importe quelle banque avec une pièce d'identité et un justificatif de "
         "domicile. Il est plafonné à 22 950 euros et les intérêts ne sont pas imposés. On ne peut détenir "
         "qu'un seul livret A par personne."),
        ("payer en euros ou en devise locale à l'étranger",
         "Quand le terminal propose de payer en euros à l'étranger, il vaut mieux choisir la devise locale. "
         "La conversion proposée par le commerçant applique souvent un taux défavorable. Votre banque "
         "convertira elle-même au taux du réseau de carte, en général plus avantageux."),
    ],
    "es": [
        ("cuánta agua lleva el arroz de la paella",
         "Para una paella valenciana se suele calcular entre dos y tres partes de caldo por cada parte de "
         "arroz, según el tipo de grano y el tamaño de la paellera. El arroz no se remueve una vez añadido el "
         "caldo. Al final se sube el fuego un minuto para que se forme el socarrat."),
        ("cómo hacer gazpacho andaluz",
         "El gazpacho se prepara triturando tomates maduros, pepino, pimiento verde, un diente de ajo, pan "
         "remojado, aceite de oliva, vinagre y sal. Después se pasa por un colador fino y se enfría en la "
         "nevera al menos dos horas. Se sirve muy frío, a veces con daditos de verdura por encima."),
        ("mejor época para visitar la Patagonia",
         "La mejor época para visitar la Patagonia es de noviembre a marzo, durante el verano austral. "
         "Los días son largos y la mayoría de los senderos y refugios están abiertos. En invierno muchas "
         "rutas quedan cerradas por la nieve y el viento."),
        ("qué hacer si pierdo el pasaporte en el extranjero",
         "Si pierdes el pasaporte en otro país, denuncia primero la pérdida en la policía local. Con esa "
         "denuncia acude al consulado o la embajada de tu país, donde pueden emitir un documento provisional "
         "de viaje. Llevar una copia digital del pasaporte agiliza mucho el trámite."),
        ("cuánta agua hay que beber al día",
         "La recomendación general ronda los dos litros diarios de líquidos para un adulto, aunque parte "
         "llega con la comida. En verano o al hacer deporte la necesidad aumenta. Un buen indicador es el "
         "color de la orina: si es clara, la hidratación suele ser suficiente."),
        ("el móvil se queda sin batería muy rápido",
         "Si la batería del móvil dura poco, revisa en los ajustes qué aplicaciones consumen más energía. "
         "Bajar el brillo de la pantalla y desactivar la localización cuando no se usa ayuda bastante. "
         "Si el teléfono tiene varios años, la batería puede estar desgastada y convenga cambiarla."),
        ("cómo leer un archivo CSV en Python",
         "El módulo csv de la biblioteca estándar de Python lee archivos CSV fila a fila con csv.reader o "
         "csv.DictReader. Conviene abrir el archivo con newline='' y la codificación correcta, por ejemplo "
         "utf-8. Para análisis más complejos muchos usan pandas con la función read_csv."),
        ("por qué se construyó la Alhambra",
         "La Alhambra de Granada fue levantada por la dinastía nazarí a partir del siglo XIII como fortaleza, "
         "palacio y pequeña ciudad. Sus patios, fuentes y decoraciones de yeso muestran el refinamiento del "
         "último reino musulmán de la península. En 1492 pasó a manos de los Reyes Católicos."),
        ("qué es la gota fría",
         "La gota fría, o DANA, es una bolsa de aire frío en altura que se separa de la circulación general. "
         "Cuando pasa sobre el Mediterráneo cálido a finales de verano, puede provocar lluvias torrenciales en "
         "pocas horas. Por eso en otoño hay avisos frecuentes en la costa este de España."),
        ("cómo hacer un presupuesto mensual",
         "Un presupuesto mensual empieza apuntando todos los ingresos y todos los gastos fijos, como alquiler "
         "o facturas. Después se reserva una cantidad para el ahorro antes de repartir el resto en gastos "
         "variables. Revisarlo cada mes ayuda a detectar dónde se va el dinero."),
        ("cómo funciona una hipoteca a tipo variable",
         "En una hipoteca a tipo variable, el interés se calcula sumando un diferencial fijo a un índice de "
         "referencia como el euríbor. Cuando el índice sube, la cuota mensual también sube en la siguiente "
         "revisión. Por eso conviene calcular si podrías pagar la cuota con tipos más altos."),
    ],
    "zh": [
        ("饺子怎么煮才不会破",
         "煮饺子时要等水大开后再下锅，下锅后用勺背沿锅边轻轻推动，防止粘底。水再次沸腾时加一小碗凉水，"
         "重复两三次，饺子浮起、皮变得鼓胀就熟了。冷冻饺子不需要解冻，直接下锅即可。"),
        ("电饭锅煮米饭水放多少",
         "用电饭锅煮白米饭，一般米和水的比例大约是一比一点二。新米含水多可以少放一点水，陈米则多放一点。"
         "煮好后不要马上开盖，再焖十分钟，米饭会更松软。"),
        ("去北京故宫需要提前预约吗",
         "参观故宫必须提前在官方网站或小程序实名预约购票，现场不售票。旺季和节假日的门票往往几天前就售罄。"
         "周一故宫闭馆，法定节假日除外，入园时需要携带预约时使用的身份证件。"),
        ("高铁可以带充电宝吗",
         "乘坐高铁可以携带充电宝，但额定能量一般不能超过一百瓦时。充电宝上的标识需要清晰，"
         "否则安检时可能被拒绝。与飞机相比，火车对充电宝的要求相对宽松一些。"),
        ("经常熬夜对身体有什么影响",
         "长期熬夜会打乱生物钟，使白天注意力下降、记忆力变差。睡眠不足还会影响免疫力，"
         "并增加肥胖和高血压的风险。即使工作繁忙，也应尽量保证每天七个小时左右的睡眠。"),
        ("手机收到验证码短信却不是自己申请的",
         "如果收到并非自己申请的验证码，很可能是有人在尝试登录或注册你的账号。千万不要把验证码告诉任何人，"
         "包括自称客服的人。建议立即修改相关账号的密码，并开启双重验证。"),
        ("学编程应该先学哪种语言",
         "对初学者来说，Python 语法简洁，资料丰富，是常见的入门选择。如果想做网页，"
         "可以从 JavaScript 开始；想开发安卓应用则可以学习 Kotlin。最重要的是选定一门语言，坚持做一些小项目。"),
        ("长城是什么时候修建的",
         "长城的修建始于春秋战国时期，各诸侯国为了防御而修筑城墙。秦始皇统一中国后把这些城墙连接起来。"
         "今天人们看到的大部分砖石长城是明朝时期修建的。"),
        ("为什么南方的梅雨季节那么潮湿",
         "每年六七月，暖湿气流和北方冷空气在长江中下游一带相遇，形成持续的降雨带。"
         "由于雨带移动缓慢，阴雨天气可以持续一个月左右，空气湿度很高，衣物和食物容易发霉。"
         "这段时间正好是梅子成熟的季节，所以叫梅雨。"),
        ("每个月工资应该存多少",
         "常见的建议是每月先把收入的百分之二十存起来，再安排其他开支。"
         "首先要准备相当于三到六个月生活费的应急资金，之后再考虑基金等投资。"
         "如果有高利率的信用卡欠款，应当优先还清。"),
        ("出国旅游换外币在哪里换划算",
         "出国前可以在国内银行预约兑换外币，汇率通常比机场兑换点更好。"
         "到了当地，用银联或信用卡刷卡消费往往更方便，也不必携带大量现金。"
         "少量现金可以备着支付小费或在小商店使用。"),
    ],
    "ja": [
        ("味噌汁の出汁の取り方",
         "昆布を水に三十分ほど浸してから弱火にかけ、沸騰直前に取り出します。火を止めてかつお節を入れ、"
         "二分ほど置いてからこせば一番出汁ができます。具材を煮てから火を弱め、最後に味噌を溶き入れると香りが飛びません。"),
        ("お米は何回研げばいい",
         "最近のお米は精米技術が良いので、軽く三回ほど研げば十分です。最初の水はお米がすぐに吸うので、"
         "手早く捨てるのがポイントです。研いだ後は三十分以上浸水させると、ふっくら炊き上がります。"),
        ("新幹線の指定席はいつから予約できる",
         "新幹線の指定席は、乗車日の一か月前の午前十時から予約できます。年末年始やお盆などの繁忙期は、"
         "発売直後に満席になることもあります。ネット予約サービスを使えば、駅に行かなくても座席を選べます。"),
        ("京都で紅葉が見頃になるのはいつ",
         "京都の紅葉は例年十一月中旬から十二月上旬にかけて見頃を迎えます。"
         "東福寺や永観堂などの名所は週末に大変混雑するため、早朝の訪問がおすすめです。"
         "その年の気温によって時期が一週間ほど前後することがあります。"),
        ("花粉症の症状を軽くする方法",
         "花粉症の症状を抑えるには、外出時にマスクと眼鏡をつけて花粉が体に入るのを減らすことが大切です。"
         "帰宅したら玄関の前で衣服を払い、すぐに顔を洗いましょう。"
         "症状が強い場合は、シーズン前から医師に相談して薬を飲み始めると効果的です。"),
        ("パソコンの動作が遅いときの対処法",
         "パソコンが重いときは、まず使っていないアプリを終了し、再起動してみましょう。"
         "起動時に自動で立ち上がるソフトを減らすと、立ち上がりも速くなります。"
         "ストレージの空き容量が少ない場合は、不要なファイルを削除することも効果があります。"),
        ("JavaScriptのletとconstの違い",
         "let と const はどちらもブロックスコープの変数を宣言します。"
         "const で宣言した変数には再代入ができませんが、オブジェクトの中身は変更できます。"
         "基本は const を使い、値を変える必要があるときだけ let を使うのが一般的です。"),
        ("江戸時代はいつからいつまで",
         "江戸時代は、徳川家康が江戸に幕府を開いた千六百三年から、"
         "大政奉還が行われた千八百六十七年までのおよそ二百六十年間を指します。"
         "鎖国政策のもとで長い平和が続き、町人文化が栄えました。"),
        ("梅雨明けはいつ頃",
         "関東地方の梅雨明けは平年では七月中旬ごろです。梅雨明けの後は太平洋高気圧に覆われ、"
         "本格的な夏の暑さが始まります。年によっては六月中に梅雨が明けることもあります。"),
        ("NISAとは何ですか",
         "NISAは、株式や投資信託の運用で得た利益が非課税になる制度です。"
         "通常は利益に約二十パーセントの税金がかかりますが、NISA口座ならその税金がかかりません。"
         "少額からの長期投資を後押しするために作られました。"),
        ("ふるさと納税の仕組み",
         "ふるさと納税は、応援したい自治体に寄付をすると、"
         "自己負担の二千円を除いた額が所得税や住民税から控除される仕組みです。"
         "多くの自治体が地元の特産品を返礼品として送っています。控除を受けられる上限額は収入によって異なります。"),
    ],
    "ar": [
        ("كيف أحضر الحمص بالطحينة في البيت",
         "يُنقع الحمص طوال الليل ثم يُسلق حتى يصبح طريًا جدًا. بعد ذلك يُهرس مع الطحينة وعصير الليمون "
         "والثوم وقليل من ماء السلق حتى يصبح ناعمًا. يُقدَّم في طبق مع زيت الزيتون ورشة من الكمون أو البابريكا."),
        ("طريقة تحضير القهوة العربية بالهيل",
         "تُغلى الماء في الدلة ثم تُضاف القهوة المحمصة تحميصًا خفيفًا وتُترك على نار هادئة عشر دقائق. "
         "يُضاف الهيل المطحون في النهاية ويُترك قليلًا حتى تترسب القهوة. تُقدَّم في فناجين صغيرة مع التمر."),
        ("ما أفضل وقت لزيارة مدينة البتراء",
         "أفضل وقت لزيارة البتراء هو الربيع من مارس إلى مايو أو الخريف من سبتمبر إلى نوفمبر. "
         "في الصيف ترتفع الحرارة كثيرًا في الوادي، لذلك يُنصح بالبدء في الصباح الباكر. "
         "يحتاج الزائر إلى يوم كامل على الأقل لرؤية الخزنة والدير."),
        ("هل أحتاج تأشيرة لزيارة الإمارات",
         "يعتمد ذلك على جنسيتك، فمواطنو كثير من الدول يحصلون على تأشيرة عند الوصول إلى مطارات الإمارات. "
         "أما غيرهم فيجب أن يتقدموا بطلب مسبق عبر شركة الطيران أو الفندق أو المواقع الرسمية. "
         "يجب أن يكون جواز السفر صالحًا لمدة ستة أشهر على الأقل."),
        ("كيف أخفف من الصداع بدون أدوية",
         "يساعد شرب كمية كافية من الماء والراحة في غرفة هادئة ومظلمة على تخفيف الصداع الخفيف. "
         "كما أن وضع كمادة باردة على الجبهة وتدليك الرقبة قد يفيدان. "
         "إذا تكرر الصداع كثيرًا أو كان شديدًا بشكل مفاجئ فيجب مراجعة الطبيب."),
        ("كيف أحمي حسابي على واتساب من السرقة",
         "فعِّل ميزة التحقق بخطوتين من إعدادات الحساب واختر رمزًا سريًا لا يعرفه غيرك. "
         "لا تشارك أبدًا رمز التفعيل الذي يصلك برسالة قصيرة حتى لو طلبه صديق. "
         "وراجع بين حين وآخر قائمة الأجهزة المرتبطة بحسابك."),
        ("ما هي قاعدة البيانات العلائقية",
         "قاعدة البيانات العلائقية تخزن البيانات في جداول مكونة من صفوف وأعمدة، وترتبط الجداول ببعضها عبر مفاتيح. "
         "تُستخدم لغة SQL للاستعلام عن البيانات وتعديلها. من أشهر أمثلتها PostgreSQL وMySQL."),
        ("متى بنيت الأهرامات",
         "بُني الهرم الأكبر في الجيزة في عهد الملك خوفو نحو عام ألفين وخمسمئة وستين قبل الميلاد. "
         "استغرق بناؤه نحو عشرين عامًا وشارك فيه آلاف العمال المهرة. "
         "ظل أعلى بناء صنعه الإنسان لأكثر من ثلاثة آلاف وثمانمئة عام."),
        ("لماذا تحدث العواصف الرملية",
         "تحدث العواصف الرملية عندما تهب رياح قوية فوق أرض جافة ومفككة فترفع الرمال والغبار إلى الجو. "
         "تكثر في الربيع وبداية الصيف في شبه الجزيرة العربية وشمال أفريقيا. "
         "ينصح الأطباء مرضى الربو بالبقاء في المنزل وإغلاق النوافذ أثناءها."),
        ("كيف أبدأ الادخار من راتب صغير",
         "ابدأ بتحديد مبلغ صغير ثابت تقتطعه من الراتب فور استلامه، حتى لو كان خمسة بالمئة فقط. "
         "سجِّل مصروفاتك لمدة شهر لتعرف أين يذهب المال، ثم قلل النفقات غير الضرورية. "
         "ومع الوقت ارفع نسبة الادخار كلما زاد دخلك."),
        ("ما الفرق بين بطاقة الائتمان وبطاقة الخصم",
         "بطاقة الخصم تسحب المبلغ مباشرة من رصيد حسابك البنكي، فلا تنفق أكثر مما تملك. "
         "أما بطاقة الائتمان فتمنحك قرضًا قصير الأجل من البنك تسدده لاحقًا، "
         "وإذا تأخرت في السداد تُفرض عليك فوائد مرتفعة."),
    ],
    "hi": [
        ("अरहर की दाल कैसे बनाएं",
         "अरहर की दाल को धोकर प्रेशर कुकर में पानी, हल्दी और नमक के साथ तीन सीटी तक पकाएं। "
         "अलग पैन में घी गरम करके जीरा, हींग, लहसुन और सूखी लाल मिर्च का तड़का लगाएं। "
         "तड़के को दाल में मिलाकर ऊपर से हरा धनिया डालें।"),
        ("मसाला चाय बनाने का सही तरीका",
         "एक बर्तन में पानी उबालें और उसमें कुटी हुई अदरक, इलायची और थोड़ी सी दालचीनी डालें। "
         "दो मिनट बाद चायपत्ती और चीनी डालकर फिर दूध मिलाएं। "
         "चाय को दो-तीन बार उबाल आने दें और छानकर गरमागरम परोसें।"),
        ("ट्रेन का तत्काल टिकट कब बुक होता है",
         "तत्काल टिकट यात्रा से एक दिन पहले बुक किए जाते हैं। एसी श्रेणियों के लिए बुकिंग सुबह दस बजे "
         "और स्लीपर श्रेणी के लिए ग्यारह बजे खुलती है। सीटें बहुत जल्दी भर जाती हैं, इसलिए पहले से लॉग इन करके तैयार रहें।"),
        ("मनाली घूमने का सबसे अच्छा समय",
         "मनाली घूमने के लिए मार्च से जून का समय सबसे अच्छा माना जाता है, जब मौसम सुहावना रहता है। "
         "बर्फ देखने के शौकीन लोग दिसंबर से फरवरी के बीच जाते हैं। "
         "बरसात के मौसम में भूस्खलन के कारण सड़कें बंद हो सकती हैं।"),
        ("डायबिटीज में क्या खाना चाहिए",
         "डायबिटीज में साबुत अनाज, दालें, हरी सब्जियां और कम मीठे फल खाना फायदेमंद है। "
         "मैदा, मिठाई और मीठे पेय पदार्थों से बचना चाहिए। "
         "थोड़ा-थोड़ा करके दिन में कई बार खाने से शुगर का स्तर स्थिर रहता है।"),
        ("यूपीआई पेमेंट फेल हो जाए तो पैसे कब वापस आते हैं",
         "अगर यूपीआई पेमेंट फेल हो गया और खाते से पैसे कट गए, तो आमतौर पर वे कुछ घंटों में अपने आप वापस आ जाते हैं। "
         "ज्यादातर मामलों में यह काम पांच कार्यदिवसों के भीतर हो जाता है। "
         "ऐसा न हो तो ऐप में लेनदेन की शिकायत दर्ज करें।"),
        ("वेबसाइट बनाने के लिए कौन सी भाषा सीखें",
         "वेबसाइट बनाने के लिए सबसे पहले HTML और CSS सीखें, जिनसे पेज की संरचना और डिज़ाइन बनती है। "
         "इसके बाद JavaScript सीखें ताकि पेज इंटरैक्टिव बन सकें। "
         "सर्वर की तरफ़ के काम के लिए Python या Node.js अच्छे विकल्प हैं।"),
        ("ताजमहल किसने बनवाया था",
         "ताजमहल मुगल बादशाह शाहजहाँ ने अपनी पत्नी मुमताज़ महल की याद में बनवाया था। "
         "इसका निर्माण लगभग 1632 में शुरू हुआ और करीब बीस साल में पूरा हुआ। "
         "सफेद संगमरमर से बना यह मकबरा आगरा में यमुना नदी के किनारे स्थित है।"),
        ("मानसून केरल में कब आता है",
         "दक्षिण-पश्चिम मानसून आमतौर पर एक जून के आसपास केरल के तट पर पहुंचता है। "
         "इसके बाद यह धीरे-धीरे उत्तर की ओर बढ़ता है और जुलाई के मध्य तक लगभग पूरे देश में फैल जाता है। "
         "किसानों के लिए इसकी समय पर शुरुआत बहुत महत्वपूर्ण है।"),
        ("म्यूचुअल फंड में एसआईपी क्या है",
         "एसआईपी यानी सिस्टमैटिक इन्वेस्टमेंट प्लान में आप हर महीने एक तय रकम म्यूचुअल फंड में निवेश करते हैं। "
         "इससे बाज़ार के उतार-चढ़ाव का औसत निकल जाता है और एक साथ बड़ी रकम लगाने की ज़रूरत नहीं पड़ती। "
         "लंबे समय तक निवेश करने पर चक्रवृद्धि का फायदा मिलता है।"),
        ("इनकम टैक्स रिटर्न भरने की आखिरी तारीख",
         "ज्यादातर वेतनभोगी लोगों के लिए आयकर रिटर्न भरने की आखिरी तारीख 31 जुलाई होती है। "
         "समय पर रिटर्न न भरने पर जुर्माना लग सकता है और कुछ नुकसान अगले साल आगे नहीं ले जाए जा सकते। "
         "रिटर्न आयकर विभाग की वेबसाइट पर ऑनलाइन भरा जा सकता है।"),
    ],
}

MIXED: list[tuple[str, str, str]] = [
    ("en-de", "how long to boil eggs for a soft yolk",
     "Für ein weiches Ei mit flüssigem Eigelb legt man die Eier in kochendes Wasser und lässt sie etwa "
     "sechs Minuten garen. Danach sofort kalt abschrecken, damit sie nicht weiter garen. Größere Eier "
     "oder Eier direkt aus dem Kühlschrank brauchen eine Minute länger."),
    ("en-fr", "do I need to tip in restaurants in France",
     "En France, le service est inclus dans l'addition des restaurants, donc le pourboire n'est pas "
     "obligatoire. Beaucoup de clients laissent tout de même quelques euros quand le service a été "
     "agréable. Dans les cafés, on arrondit souvent simplement la somme."),
    ("en-es", "what to do if my flight is cancelled in Europe",
     "Si la aerolínea cancela tu vuelo en la Unión Europea, tienes derecho a elegir entre el reembolso "
     "del billete o un vuelo alternativo. Según la distancia y el aviso previo, también puede corresponder "
     "una compensación de hasta 600 euros. Mientras esperas, la compañía debe ofrecerte comida y, si hace "
     "falta, alojamiento."),
    ("en-ru", "how to prepare the car for winter",
     "Перед зимой стоит заменить летние шины на зимние, когда температура держится ниже плюс семи "
     "градусов. Проверьте аккумулятор, уровень антифриза и залейте незамерзающую жидкость для омывателя. "
     "В багажнике полезно возить щётку, скребок и трос."),
    ("en-zh", "how to keep cut fruit from turning brown",
     "切好的苹果和梨很快会氧化变褐色。可以把它们在淡盐水或加了柠檬汁的水里浸泡几分钟，"
     "再沥干放进密封盒冷藏。这样几个小时内颜色都不会明显改变。"),
    ("en-ja", "how to pay on trains in Tokyo without a ticket",
     "東京の電車では、SuicaやPASMOなどの交通系ICカードを改札にタッチするだけで乗車できます。"
     "カードは駅の券売機で購入やチャージができ、スマートフォンに入れて使うこともできます。"
     "コンビニでの買い物にも使えるので便利です。"),
    ("en-ar", "why does bread go stale so fast",
     "يفقد الخبز طراوته لأن النشا بداخله يعيد ترتيب نفسه ويتبلور مع مرور الوقت، وليس فقط لأنه يجف. "
     "تحدث هذه العملية أسرع في الثلاجة، لذلك يُفضَّل حفظ الخبز في كيس محكم في درجة حرارة الغرفة "
     "أو تجميده إذا لم يُستهلك خلال يومين."),
    ("en-hi", "how to treat a minor burn at home",
     "हल्की जलन होने पर उस जगह को दस से बीस मिनट तक ठंडे बहते पानी के नीचे रखें। "
     "बर्फ, टूथपेस्ट या घी न लगाएं, क्योंकि इससे त्वचा को और नुकसान हो सकता है। "
     "अगर छाले बड़े हों या जलन चेहरे पर हो तो डॉक्टर को दिखाएं।"),
    ("de-en", "wie lösche ich den Browser-Cache",
     "In most browsers you can clear the cache by pressing Ctrl+Shift+Delete (Cmd+Shift+Delete on a Mac). "
     "Choose a time range, tick cached images and files, and confirm. Cookies can be kept if you do not "
     "want to be logged out of websites."),
    ("ru-en", "какая погода в Лондоне в октябре",
     "October in London is mild and changeable, with daytime highs of around 14 to 16 degrees Celsius. "
     "Rain falls on roughly half the days, usually as light showers rather than storms. "
     "A light waterproof jacket and layers are the best choice for sightseeing."),
]

# Quantization calibration: never used for evaluation, so they share no text with the sets above.
CALIBRATION_QUERIES: list[str] = [
    "cheap flights from Lisbon to Porto in March",
    "how to descale a kettle with vinegar",
    "symptoms of vitamin D deficiency",
    "convert a docx file to pdf on linux",
    "why does my sourdough not rise",
    "python asyncio gather vs wait",
    "best time to plant tomatoes outdoors",
    "how many calories in a banana",
    "rust borrow checker cannot borrow as mutable",
    "what is the capital gains tax rate",
    "how to fix a leaking tap washer",
    "train from Vienna to Budapest duration",
    "difference between RAM and storage",
    "kubernetes pod stuck in CrashLoopBackOff",
    "how to remove red wine stain from carpet",
    "when did the Roman Empire fall",
    "is it safe to swim after eating",
    "numpy broadcasting two arrays of different shapes",
    "how to write a cover letter for a first job",
    "why is the sky red at sunset",
    "git rebase interactive squash last three commits",
    "how much sleep does a teenager need",
    "regex to match an email address",
    "ssh permission denied publickey",
]

CALIBRATION_CODE: list[str] = [
    "SELECT c.country, AVG(o.total) AS avg_total\nFROM customers AS c\nJOIN orders AS o ON o.customer_id = c.id\n"
    "WHERE o.created_at >= DATE '2024-01-01'\nGROUP BY c.country\nORDER BY avg_total DESC\nLIMIT 20;",
    "CREATE TABLE IF NOT EXISTS invoices (\n    id INTEGER PRIMARY KEY,\n    customer_id INTEGER NOT NULL "
    "REFERENCES customers(id),\n    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),\n    issued_on DATE "
    "NOT NULL DEFAULT CURRENT_DATE\n);\nCREATE INDEX invoices_by_customer ON invoices (customer_id, issued_on);",
    "#!/bin/sh\nset -eu\nbackup_dir=\"$HOME/backups/$(date +%Y-%m-%d)\"\nmkdir -p \"$backup_dir\"\n"
    "tar -czf \"$backup_dir/documents.tar.gz\" -C \"$HOME\" Documents\n"
    "find \"$HOME/backups\" -maxdepth 1 -type d -mtime +30 -exec rm -rf {} +\necho \"saved to $backup_dir\"",
    "for f in *.wav; do\n  ffmpeg -loglevel error -i \"$f\" -codec:a libmp3lame -qscale:a 2 \"${f%.wav}.mp3\"\ndone",
    '{\n  "name": "weather-widget",\n  "version": "2.3.1",\n  "private": true,\n  "scripts": {\n'
    '    "build": "vite build",\n    "test": "vitest run"\n  },\n  "dependencies": {\n    "date-fns": "^3.6.0"\n  }\n}',
    '{"user": {"id": 4821, "name": "Amina Yusuf", "roles": ["editor", "reviewer"]}, '
    '"settings": {"theme": "dark", "language": "sw", "notifications": {"email": false, "push": true}}}',
    "fn word_counts(text: &str) -> HashMap<String, usize> {\n    let mut counts = HashMap::new();\n"
    "    for word in text.split_whitespace() {\n        *counts.entry(word.to_lowercase()).or_insert(0) += 1;\n"
    "    }\n    counts\n}",
    "const debounce = (fn, ms) => {\n  let timer;\n  return (...args) => {\n    clearTimeout(timer);\n"
    "    timer = setTimeout(() => fn(...args), ms);\n  };\n};",
]

# (lang, task, text): >= 40 texts in >= 12 languages and scripts, queries and paragraphs of varied length.
CALIBRATION_MULTILINGUAL: list[tuple[str, str, str]] = [
    # Russian (Cyrillic)
    ("ru", "query", "как выбрать велосипед для города"),
    ("ru", "document",
     "Осенью в лесах средней полосы появляется много грибов, но собирать стоит только те, которые вы точно "
     "знаете. Опытные грибники советуют выходить рано утром, брать плетёную корзину и нож, а грибы срезать, "
     "не вырывая грибницу. Дома их нужно перебрать в тот же день: подберёзовики и подосиновики быстро "
     "портятся, а лисички могут полежать в холодильнике до двух суток."),
    ("ru", "document",
     "Библиотека в нашем районе недавно переехала в новое здание рядом с парком. Теперь там есть читальный "
     "зал с большими окнами, детская комната и небольшое кафе. По субботам проходят встречи книжного клуба, "
     "на которых обсуждают одну книгу в месяц, а по средам — бесплатные занятия по компьютерной грамотности "
     "для пожилых людей. Записаться можно у стойки администратора или по телефону."),
    # Ukrainian (Cyrillic)
    ("uk", "document",
     "Вареники з вишнями готують улітку, коли ягоди найсолодші. Вишні спочатку виймають з кісточок і трохи "
     "присипають цукром, щоб вони дали сік. Готові вареники подають зі сметаною, а сік можна полити зверху."),
    # German
    ("de", "query", "Fahrrad Kette quietscht was tun"),
    ("de", "document",
     "Der Wochenmarkt auf dem Rathausplatz findet jeden Dienstag und Freitag von sieben bis dreizehn Uhr "
     "statt. Neben Obst und Gemüse aus der Region gibt es Käse, frisches Brot, Blumen und einen Stand mit "
     "Fisch von der Küste. Wer mit dem Fahrrad kommt, findet Abstellplätze an der Ostseite des Platzes; "
     "Autofahrer nutzen am besten das Parkhaus am Bahnhof, weil die Straßen rund um den Markt gesperrt sind."),
    # French
    ("fr", "query", "horaires de la déchetterie le dimanche"),
    ("fr", "document",
     "Le jardin partagé du quartier accueille tous les habitants qui souhaitent cultiver quelques légumes. "
     "Chaque membre dispose d'une petite parcelle et participe à l'arrosage pendant les vacances d'été. "
     "Les outils sont rangés dans la cabane près de l'entrée, et un composteur collectif reçoit les "
     "épluchures. Une fête des récoltes est organisée chaque année fin septembre."),
    # Spanish
    ("es", "query", "recetas fáciles con lentejas"),
    ("es", "document",
     "El mercado de San Miguel, junto a la Plaza Mayor, ocupa una antigua estructura de hierro de principios "
     "del siglo veinte. Hoy funciona como un mercado gastronómico donde se pueden probar tapas, ostras, "
     "quesos y vermú. Suele estar lleno por la tarde, así que para comer tranquilo conviene ir a media mañana."),
    # Portuguese
    ("pt", "document",
     "O pastel de nata nasceu no Mosteiro dos Jerónimos, em Lisboa, onde os monges usavam as gemas que "
     "sobravam das claras para engomar a roupa. Hoje é vendido em quase todas as pastelarias do país, "
     "e muitos preferem comê-lo ainda morno, com canela e açúcar em pó por cima."),
    ("pt", "query", "como renovar o cartão de cidadão"),
    # Italian
    ("it", "document",
     "Per preparare un buon risotto bisogna tostare il riso a secco per un paio di minuti, poi sfumarlo con "
     "un bicchiere di vino bianco. Il brodo caldo va aggiunto un mestolo alla volta, mescolando spesso. "
     "Alla fine si manteca con burro freddo e parmigiano, lasciando riposare due minuti prima di servire."),
    ("it", "query", "orari dei musei vaticani il lunedì"),
    # Polish
    ("pl", "document",
     "Pierogi ruskie robi się z farszem z ziemniaków, twarogu i smażonej cebuli. Ciasto powinno być cienkie "
     "i elastyczne, a pierogi gotuje się w osolonej wodzie, aż wypłyną. Najlepiej smakują podsmażone na "
     "maśle i podane ze skwarkami."),
    # Turkish
    ("tr", "document",
     "İstanbul'da vapurla Boğaz turu yapmak, şehri görmenin en keyifli yollarından biridir. Eminönü'nden "
     "kalkan vapurlar Avrupa ve Asya kıyıları arasında zikzak çizerek Anadolu Kavağı'na kadar gider. "
     "Yolculuk yaklaşık bir buçuk saat sürer ve dönüşte Rumeli Hisarı'nın manzarası çok güzeldir."),
    ("tr", "query", "Kapadokya balon turu fiyatları"),
    # Vietnamese
    ("vi", "document",
     "Phở bò là món ăn sáng quen thuộc của người Hà Nội. Nước dùng được ninh từ xương bò trong nhiều giờ "
     "cùng quế, hồi và gừng nướng. Khi ăn, người ta thêm rau thơm, chanh và một chút ớt tươi."),
    # Greek
    ("el", "document",
     "Η Ακρόπολη της Αθήνας είναι ένας βραχώδης λόφος πάνω από την πόλη, όπου βρίσκεται ο Παρθενώνας. "
     "Ο ναός χτίστηκε τον πέμπτο αιώνα π.Χ. προς τιμήν της θεάς Αθηνάς. Το καλοκαίρι είναι καλύτερα να "
     "ανεβείτε νωρίς το πρωί, πριν η ζέστη γίνει ανυπόφορη."),
    ("el", "query", "πώς να φτιάξω μουσακά"),
    ("el", "document",
     "Τα ελληνικά νησιά συνδέονται με τον Πειραιά και τη Ραφήνα με πλοία όλο τον χρόνο. Τους καλοκαιρινούς "
     "μήνες τα δρομολόγια είναι πολύ περισσότερα, αλλά τα εισιτήρια για αυτοκίνητα εξαντλούνται γρήγορα."),
    # Hebrew
    ("he", "document",
     "ירושלים היא אחת הערים העתיקות בעולם, והעיר העתיקה שלה מחולקת לארבעה רבעים. "
     "בשבת רוב החנויות והתחבורה הציבורית סגורים, ולכן כדאי לתכנן את הביקור מראש. "
     "שוק מחנה יהודה הומה אנשים ביום שישי בבוקר."),
    ("he", "query", "מתי יוצאת הרכבת הראשונה לתל אביב"),
    ("he", "document",
     "חומוס טוב מכינים מגרגרי חומוס שהושרו לילה שלם ובושלו עד שהם רכים מאוד. "
     "טוחנים אותם עם טחינה, לימון ושום, ומגישים עם שמן זית ופיתה חמה."),
    # Arabic
    ("ar", "query", "أفضل مطاعم المأكولات البحرية في الإسكندرية"),
    ("ar", "document",
     "مكتبة الإسكندرية الجديدة افتُتحت عام ألفين واثنين قرب موقع المكتبة القديمة الشهيرة. "
     "يتسع مبناها المستدير لملايين الكتب، وتضم متاحف وقاعات للمعارض وقبة سماوية. "
     "يمكن للزوار حجز جولة إرشادية باللغة العربية أو الإنجليزية."),
    ("ar", "document",
     "يحرص كثير من الناس في شهر رمضان على الإفطار مع العائلة عند أذان المغرب، فيبدؤون بالتمر والماء ثم "
     "الشوربة. وتمتد السهرات بعد صلاة التراويح في المقاهي والأسواق حتى وقت متأخر من الليل."),
    # Persian (Arabic script)
    ("fa", "document",
     "نوروز جشن آغاز سال نو در ایران است و در نخستین روز بهار برگزار می‌شود. خانواده‌ها سفره هفت‌سین "
     "می‌چینند و به دیدار بزرگ‌ترها می‌روند. تعطیلات نوروزی حدود دو هفته طول می‌کشد."),
    # Chinese (CJK)
    ("zh", "query", "上海到杭州高铁多长时间"),
    ("zh", "document",
     "西湖位于杭州市中心以西，三面环山，湖中有苏堤和白堤两条长堤。春天沿着苏堤散步，可以看到桃花和柳树；"
     "夏天湖里开满荷花。游客可以租自行车环湖骑行，也可以坐游船去湖心的小岛。"),
    ("zh", "document",
     "小区附近新开了一家社区食堂，主要为老年人提供价格实惠的午餐和晚餐。每份套餐有两荤一素和一碗汤，"
     "六十岁以上的居民凭卡还能享受优惠。食堂每天早上七点开门，周末也正常营业。"),
    # Japanese
    ("ja", "query", "大阪から奈良への行き方"),
    ("ja", "document",
     "近所の図書館では、毎月第二土曜日に子ども向けの読み聞かせ会を開いています。"
     "参加は無料で予約も必要ありません。絵本のほかに紙芝居や手遊びもあり、小さな子どもでも楽しめます。"),
    ("ja", "document",
     "富士山の登山シーズンは七月上旬から九月上旬までです。山頂付近は夏でも気温が零度近くまで下がるため、"
     "防寒着と雨具は必ず用意してください。高山病を防ぐため、途中の山小屋で一泊してゆっくり登るのがおすすめです。"),
    # Korean (Hangul)
    ("ko", "query", "서울에서 부산까지 KTX 요금"),
    ("ko", "document",
     "김치는 배추를 소금에 절인 뒤 고춧가루, 마늘, 생강, 젓갈로 만든 양념을 버무려 만든다. "
     "담근 김치는 실온에서 하루 정도 익힌 다음 냉장고에 보관한다. 겨울을 앞두고 많은 양을 한꺼번에 담그는 것을 김장이라고 한다."),
    ("ko", "document",
     "제주도는 한국에서 가장 큰 섬으로, 한라산과 해안 산책로인 올레길로 유명하다. "
     "봄에는 유채꽃이 피고 여름에는 해수욕장이 붐빈다. 섬 안에서는 렌터카를 이용하는 여행자가 많다."),
    # Thai
    ("th", "document",
     "ต้มยำกุ้งเป็นอาหารไทยที่มีรสเปรี้ยวและเผ็ด ใส่ตะไคร้ ใบมะกรูด ข่า และพริกขี้หนู "
     "บางสูตรใส่นมข้นจืดหรือน้ำพริกเผาเพื่อให้น้ำซุปเข้มข้นขึ้น นิยมรับประทานกับข้าวสวยร้อน ๆ"),
    ("th", "query", "เที่ยวเชียงใหม่ช่วงไหนดี"),
    ("th", "document",
     "ตลาดน้ำดำเนินสะดวกอยู่ห่างจากกรุงเทพฯ ประมาณหนึ่งร้อยกิโลเมตร นักท่องเที่ยวควรไปถึงตั้งแต่เช้า "
     "เพราะแม่ค้าจะพายเรือขายผลไม้และอาหารมากที่สุดในช่วงเช้า"),
    # Hindi (Devanagari)
    ("hi", "query", "दिल्ली में घूमने की जगहें"),
    ("hi", "document",
     "दीवाली से पहले लोग अपने घरों की सफाई करते हैं और उन्हें दीयों और रंगोली से सजाते हैं। "
     "त्योहार की रात लक्ष्मी पूजा होती है और परिवार मिलकर मिठाइयाँ बाँटते हैं। "
     "कई शहरों में अब प्रदूषण कम करने के लिए पटाखों पर रोक लगाई जाती है।"),
    # Marathi (Devanagari)
    ("mr", "document",
     "पुण्यातील शनिवारवाडा हा पेशव्यांचा राजवाडा होता. आज त्याच्या भिंती आणि भव्य दरवाजे शिल्लक आहेत. "
     "संध्याकाळी येथे इतिहास सांगणारा प्रकाश आणि ध्वनी कार्यक्रम होतो."),
    # Bengali
    ("bn", "document",
     "কলকাতার দুর্গাপূজা শহরের সবচেয়ে বড় উৎসব। পাঁচ দিন ধরে হাজার হাজার প্যান্ডেল সাজানো হয় "
     "এবং মানুষ রাত জেগে ঠাকুর দেখতে বের হয়।"),
    # Tamil
    ("ta", "document",
     "தோசை மாவு அரிசியும் உளுந்தும் ஊறவைத்து அரைத்து ஒரு இரவு புளிக்க வைத்துத் தயாரிக்கப்படுகிறது. "
     "சூடான தோசைக்கல்லில் மெல்லியதாகப் பரப்பி, சாம்பார் மற்றும் தேங்காய் சட்னியுடன் பரிமாறுவார்கள்."),
    # Swahili
    ("sw", "document",
     "Mji wa Zanzibar una mitaa myembamba ya Mji Mkongwe yenye milango ya mbao iliyochongwa kwa ustadi. "
     "Wageni wengi hutembelea soko la Darajani asubuhi na kula chakula cha jioni katika bustani ya Forodhani."),
    # Indonesian
    ("id", "query", "cara membuat nasi goreng kampung"),
    # Georgian and Armenian scripts
    ("ka", "document",
     "თბილისის ძველი უბანი ცნობილია გოგირდის აბანოებით და ხის აივნებიანი სახლებით. "
     "ნარიყალას ციხიდან მთელი ქალაქი ჩანს."),
    ("hy", "document",
     "Երևանը կոչվում է վարդագույն քաղաք, քանի որ շատ շենքեր կառուցված են վարդագույն տուֆից։ "
     "Պարզ եղանակին քաղաքից երևում է Արարատ լեռը։"),
    # A long German text (crosses 257 tokens)
    ("de", "document",
     "Die Stadtwerke weisen darauf hin, dass im kommenden Monat in mehreren Straßen der Innenstadt die "
     "Wasserleitungen erneuert werden. Die Arbeiten beginnen am ersten Montag des Monats in der Lindenallee "
     "und setzen sich abschnittsweise bis zur Brückenstraße fort. Während der Bauzeit kann es tagsüber zu "
     "kurzen Unterbrechungen der Wasserversorgung kommen; betroffene Haushalte werden mindestens zwei Tage "
     "vorher durch einen Aushang im Treppenhaus informiert. Die Buslinien 4 und 12 werden in dieser Zeit "
     "umgeleitet, die Ersatzhaltestellen sind gelb markiert. Für Anwohnerinnen und Anwohner, die auf ein "
     "Auto angewiesen sind, stehen auf dem Parkplatz hinter der Stadthalle kostenlose Stellplätze zur "
     "Verfügung. Geschäfte bleiben zu Fuß jederzeit erreichbar, und der Lieferverkehr ist morgens zwischen "
     "sechs und neun Uhr frei. Nach Abschluss der Arbeiten wird die Fahrbahn neu asphaltiert und die "
     "Radwege werden verbreitert, was viele Bürgerinnen und Bürger seit Jahren gefordert haben. Fragen "
     "beantwortet das Servicetelefon der Stadtwerke montags bis freitags von acht bis achtzehn Uhr; "
     "außerdem gibt es am zweiten Donnerstag des Monats eine Informationsveranstaltung im Gemeindesaal, "
     "bei der die Bauleitung den Zeitplan vorstellt und Anregungen aufnimmt."),
    # A long Russian text (crosses 257 tokens)
    ("ru", "document",
     "Чтобы комнатные растения пережили зиму, им нужно немного другое внимание, чем летом. Световой день "
     "становится коротким, поэтому горшки лучше переставить ближе к окну, но так, чтобы листья не касались "
     "холодного стекла. Поливать зимой приходится реже: земля в горшке сохнёт медленнее, и лишняя вода "
     "легко приводит к гниению корней. Перед поливом проверьте пальцем, просохла ли почва на глубину "
     "двух-трёх сантиметров. Воздух в квартирах с центральным отоплением очень сухой, и многие растения, "
     "особенно тропические, начинают сбрасывать листья или подсыхать по краям. Помогает поддон с мокрой "
     "галькой, увлажнитель воздуха или простое опрыскивание по утрам. Удобрения с ноября по февраль "
     "обычно не нужны, потому что рост почти останавливается. Пересаживать растения тоже лучше весной, "
     "когда они выходят из периода покоя. Если на листьях появились паутинка или мелкие точки, осмотрите "
     "растение внимательнее: зимой в сухом воздухе часто заводится паутинный клещ, и чем раньше его заметить, "
     "тем проще с ним справиться."),
]
