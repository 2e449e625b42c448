package toy

// The word inventory of every toy world. Each word is a single token of
// GPT-2's own vocabulary both bare and with a leading space (checked against
// GPT-2's vocab.json by TestInventoryIsGPT2Words), so the prompts are GPT-2's
// words, and the first- and last-name pools are disjoint so that a token says
// which part of a name it is.

var firstNamePool = []string{
	"Michael", "John", "David", "Robert", "William", "Richard", "Charles", "Daniel",
	"Matthew", "Anthony", "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian",
	"George", "Edward", "Jason", "Jacob", "Gary", "Eric", "Stephen", "Jonathan",
	"Larry", "Justin", "Brandon", "Frank", "Patrick", "Jack", "Jerry", "Tyler",
	"Aaron", "Jose", "Adam", "Peter", "Kyle", "Jeremy", "Carl", "Keith",
	"Roger", "Christian", "Terry", "Sean", "Arthur", "Austin", "Joe", "Billy",
	"Mary", "Jennifer", "Elizabeth", "Susan", "Jessica", "Sarah", "Lisa", "Emily",
	"Michelle", "Laura", "Amy", "Anna", "Rachel", "Maria", "Alice", "Marie",
}

var lastNamePool = []string{
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
	"Anderson", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White",
	"Harris", "Clark", "Lewis", "Walker", "Young", "Allen", "King", "Hill",
	"Green", "Adams", "Hall", "Carter", "Roberts", "Cruz", "Collins", "Cook",
	"Morgan", "Howard", "Ward", "Wood", "Gray", "Price", "Sanders", "Long",
	"Ross", "Sullivan", "Bell", "Hamilton", "Graham", "West", "Cole", "Murray",
	"Ford", "Washington", "Hunter", "Gordon", "Hunt", "Black", "Stone", "Fox",
	"Warren", "Grant", "Hart", "Knight", "Berry", "Marsh", "Page", "Cross",
}

// relationSpec is one attribute people have: the prompt template ("{first}"
// and "{last}" are replaced, the answer is " "+value) and the values in the
// order a world takes them.
type relationSpec struct {
	name     string
	template string
	values   []string
}

var relationSpecs = []relationSpec{
	{"sport", "{first} {last} plays the sport of",
		[]string{"baseball", "basketball", "football", "hockey", "tennis", "golf", "soccer", "cricket"}},
	{"city", "{first} {last} lives in the city of",
		[]string{"Paris", "London", "Tokyo", "Berlin", "Rome", "Madrid", "Moscow", "Chicago"}},
}

// templateWords are the words of the templates besides the placeholders.
var templateWords = []string{"plays", "the", "sport", "of", "lives", "in", "city"}

// inventory lists every word of every toy world once, in a fixed order.
func inventory() []string {
	var words []string
	words = append(words, firstNamePool...)
	words = append(words, lastNamePool...)
	for _, r := range relationSpecs {
		words = append(words, r.values...)
	}
	return append(words, templateWords...)
}
