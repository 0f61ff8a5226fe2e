"""Every validation rule rejects with its reason; nothing invalid is stored or overwritten."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.domain import validation as v
from api.models import Order, Product, User
from api.services.batch_insert import batch_insert
from api.tests.conftest import ROUTED


def field_errors(serializer, raw) -> dict:
    clean, errors = v.check_fields(serializer, raw)
    assert (clean is None) is bool(errors)
    return errors


@pytest.mark.parametrize("raw,field,message", [
    ({"email": "a@example.com"}, "name", v.NAME_REQUIRED),
    ({"name": "", "email": "a@example.com"}, "name", v.NAME_BLANK),
    ({"name": "   ", "email": "a@example.com"}, "name", v.NAME_BLANK),
    ({"name": None, "email": "a@example.com"}, "name", v.NAME_REQUIRED),
    ({"name": "Ann"}, "email", v.EMAIL_REQUIRED),
    ({"name": "Ann", "email": ""}, "email", v.EMAIL_REQUIRED),
    ({"name": "Ann", "email": "not-an-email"}, "email", v.EMAIL_INVALID),
    ({"name": "Ann", "email": "a@b@example.com"}, "email", v.EMAIL_INVALID),
    ({"name": "Ann", "email": "a@example.com", "id": 0}, "id", v.ID_INVALID),
    ({"name": "Ann", "email": "a@example.com", "id": "x"}, "id", v.ID_INVALID),
    ({"name": "Ann", "email": "a@example.com", "id": 2**63}, "id", v.ID_INVALID),
    ({"name": "Ann", "email": "a@example.com", "nickname": "A"}, "nickname", v.UNKNOWN_FIELD),
])  # fmt: skip
def test_user_field_rules(raw, field, message):
    """Each malformed user is rejected on the offending field with the documented message."""
    assert field_errors(v.UserInput(), raw)[field] == [message]


@pytest.mark.parametrize("raw,field,message", [
    ({"name": "Desk"}, "price", v.PRICE_REQUIRED),
    ({"name": "Desk", "price": -50.0}, "price", v.PRICE_NEGATIVE),
    ({"name": "Desk", "price": "-0.01"}, "price", v.PRICE_NEGATIVE),
    ({"name": "Desk", "price": "cheap"}, "price", v.PRICE_INVALID),
    ({"name": "Desk", "price": "NaN"}, "price", v.PRICE_INVALID),
    ({"name": "Desk", "price": True}, "price", v.PRICE_INVALID),
    ({"name": "Desk", "price": 1.005}, "price", v.PRICE_INVALID),
    ({"name": "", "price": 1}, "name", v.NAME_BLANK),
])  # fmt: skip
def test_product_field_rules(raw, field, message):
    """Each malformed product is rejected on the offending field with the documented message."""
    assert field_errors(v.ProductInput(), raw)[field] == [message]


@pytest.mark.parametrize("raw,field,message", [
    ({"user_id": 1, "product_id": 1}, "quantity", v.QUANTITY_REQUIRED),
    ({"user_id": 1, "product_id": 1, "quantity": 0}, "quantity", v.QUANTITY_NOT_POSITIVE),
    ({"user_id": 1, "product_id": 1, "quantity": -1}, "quantity", v.QUANTITY_NOT_POSITIVE),
    ({"user_id": 1, "product_id": 1, "quantity": 2.5}, "quantity", v.QUANTITY_INVALID),
    ({"user_id": 1, "product_id": 1, "quantity": "two"}, "quantity", v.QUANTITY_INVALID),
    ({"user_id": 1, "product_id": 1, "quantity": 10**9}, "quantity", v.QUANTITY_TOO_LARGE),
    ({"user_id": 0, "product_id": 1, "quantity": 1}, "user_id", v.REFERENCE_INVALID),
    ({"user_id": 1, "product_id": "x", "quantity": 1}, "product_id", v.REFERENCE_INVALID),
    ({"user_id": 1, "product_id": 1, "quantity": 1, "total": 5}, "total", v.UNKNOWN_FIELD),
])  # fmt: skip
def test_order_field_rules(raw, field, message):
    """Each malformed order is rejected on the offending field with the documented message."""
    assert field_errors(v.OrderInput(), raw)[field] == [message]


@pytest.mark.parametrize("raw", ["a string", 7, None, ["name", "email"]])
def test_a_record_must_be_an_object(raw):
    """A record that is not a JSON object is rejected as a whole, not crashed on."""
    assert field_errors(v.UserInput(), raw) == {v.NON_FIELD_ERRORS: [v.NOT_AN_OBJECT]}


def test_clean_values_are_normalised():
    """E-mails come out lower-cased and trimmed; prices as two-place Decimals."""
    user, _ = v.check_fields(v.UserInput(), {"name": " Ann ", "email": " Ann@Example.COM "})
    product, _ = v.check_fields(v.ProductInput(), {"name": "Desk", "price": 19.99})
    assert (user["name"], user["email"]) == ("Ann", "ann@example.com")
    assert product["price"] == Decimal("19.99")


def test_reason_names_the_field_when_the_message_does_not():
    """The one-line reason is readable without the error dict."""
    errors = {
        "city": ["Ensure this field has no more than 100 characters."],
        "name": ["name is blank"],
    }
    assert (
        v.reason(errors)
        == "city: Ensure this field has no more than 100 characters.; name is blank"
    )


# Database rules: they run in the insert service's worker threads, so the tests commit.
db = pytest.mark.django_db(databases=ROUTED, transaction=True)


@db
def test_email_already_stored_is_rejected_case_insensitively():
    """An e-mail differing only in case from a stored one is a duplicate."""
    User.objects.create(name="Alice", email="alice@example.com")
    result = batch_insert(users=[{"name": "Alice Two", "email": "ALICE@Example.com"}])
    assert result.users[0].status == "rejected"
    assert result.users[0].errors == {"email": [v.EMAIL_DUPLICATE]}
    assert User.objects.count() == 1


@db
def test_email_repeated_in_one_batch_keeps_the_first():
    """Within a batch the first record with an e-mail wins; later ones are duplicates."""
    result = batch_insert(
        users=[
            {"name": "A", "email": "same@example.com"},
            {"name": "B", "email": "Same@example.com"},
        ]
    )
    assert [r.status for r in result.users] == ["inserted", "rejected"]
    assert list(User.objects.values_list("name", flat=True)) == ["A"]


@db
def test_existing_id_is_rejected_never_overwritten():
    """An explicit id that exists is refused and the stored row is left as it was."""
    Product.objects.create(id=5, name="Keyboard", price="50.00")
    result = batch_insert(products=[{"id": 5, "name": "Overwrite", "price": 1}])
    assert result.products[0].errors == {"id": [v.ID_EXISTS]}
    assert Product.objects.get(id=5).name == "Keyboard"


@db
def test_repeated_explicit_id_in_one_batch_is_rejected():
    """Two records claiming one id: the first is stored, the second rejected."""
    result = batch_insert(orders=[], products=[
        {"id": 3, "name": "First", "price": 1},
        {"id": 3, "name": "Second", "price": 2},
    ])  # fmt: skip
    assert [r.status for r in result.products] == ["inserted", "rejected"]
    assert Product.objects.get(id=3).name == "First"


@db
@pytest.mark.parametrize("user_exists,product_exists,message", [
    (False, True, v.USER_MISSING),
    (True, False, v.PRODUCT_MISSING),
    (False, False, v.USER_AND_PRODUCT_MISSING),
])  # fmt: skip
def test_orders_need_an_existing_user_and_product(user_exists, product_exists, message):
    """An order naming an unknown user and/or product is rejected with which one is missing."""
    if user_exists:
        User.objects.create(id=1, name="U", email="u@example.com")
    if product_exists:
        Product.objects.create(id=1, name="P", price="3.00")
    result = batch_insert(orders=[{"user_id": 1, "product_id": 1, "quantity": 1}])
    assert result.orders[0].status == "rejected"
    assert result.orders[0].reason == message
    assert Order.objects.count() == 0


@db
def test_orders_may_reference_records_accepted_earlier_in_the_batch():
    """A user and product stored by the same batch satisfy an order; its total is computed."""
    result = batch_insert(
        users=[{"id": 42, "name": "New", "email": "new@example.com"}],
        products=[{"id": 7, "name": "Lamp", "price": "12.50"}],
        orders=[{"user_id": 42, "product_id": 7, "quantity": 3}],
    )
    assert result.summary()["orders"] == {"inserted": 1, "rejected": 0, "failed": 0}
    order = Order.objects.get(pk=result.orders[0].id)
    assert (order.user_id, order.product_id) == (42, 7)
    assert (order.unit_price, order.total) == (Decimal("12.50"), Decimal("37.50"))


@db
def test_orders_for_records_rejected_in_the_batch_are_rejected():
    """A user refused in this batch does not exist for the batch's orders."""
    Product.objects.create(id=1, name="P", price="1.00")
    result = batch_insert(
        users=[{"id": 9, "name": "", "email": "nameless@example.com"}],
        orders=[{"user_id": 9, "product_id": 1, "quantity": 1}],
    )
    assert result.users[0].reason == v.NAME_BLANK
    assert result.orders[0].reason == v.USER_MISSING


@db
def test_invalid_records_do_not_block_valid_ones():
    """One bad record is rejected alone; its neighbours are stored."""
    result = batch_insert(
        users=[
            {"name": "Ok", "email": "ok@example.com"},
            "garbage",
            {"name": "Ok2", "email": "ok2@example.com", "city": "x" * 101},
        ]
    )
    assert [r.status for r in result.users] == ["inserted", "rejected", "rejected"]
    assert result.users[2].reason.startswith("city: ")
    assert User.objects.count() == 1


@pytest.mark.parametrize("name", [" " + "x" * 200, "x" * 199 + "  "])
def test_a_length_limit_holds_for_the_text_as_sent(name):
    """The schema's ``maxLength`` is what is checked: trimming does not make room."""
    _, errors = v.check_fields(v.input_serializer(v.UserInput), {"name": name, "email": "a@b.co"})
    assert errors == {"name": ["Ensure this field has no more than 200 characters."]}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text(), children),
    max_leaves=4,
)


def records_of(serializer_class) -> st.SearchStrategy:
    """Records naming any of the serializer's fields (and a stray key), with any JSON value;
    mostly valid-looking values for the fields that matter."""
    names = [*serializer_class().fields, "stray"]
    plausible = st.sampled_from(["Ann", "ann@example.com", "12.50", "", " ", "-1", "x" * 300])
    values = JSON_VALUES | plausible | st.integers(-2, 2**63)
    return st.dictionaries(st.sampled_from(names), values, max_size=len(names))


@pytest.mark.parametrize("serializer_class", [v.UserInput, v.ProductInput, v.OrderInput])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_visiting_present_fields_only_is_drfs_full_loop(serializer_class, data):
    """The shortcut gives what DRF's loop over every field gives: values, errors, order."""
    record = data.draw(records_of(serializer_class))
    fast = v.check_fields(serializer_class(), record)
    full = serializer_class()
    full.VISIT_PRESENT_FIELDS_ONLY = False
    assert fast == v.check_fields(full, record)
    assert list(fast[1]) == list(v.check_fields(full, record)[1])


# Values near every rule's edge, for the fast accept's property test.
EDGY = st.sampled_from(
    [
        "Ann",
        " Ann ",
        "ann@example.com",
        " Ann.Lee+x@Example.COM ",
        "a@b",
        "a@localhost",
        "a@[127.0.0.1]",
        "a@bücher.de",
        "a..b@example.com",
        "a@-example.com",
        "@example.com",
        "a@",
        "a@b@c.de",
        "x" * 250 + "@example.com",
        "Ann\x00",
        "Ann\ud800",
        "Ännä",
        "12.50",
        " 12.5 ",
        "12.505",
        "1e3",
        "NaN",
        "-0.00",
        "9999999999.99",
        "10000000000.00",
        "individual",
        "business",
        "pending",
        "cancelled",
        "Pending",
        "",
        " ",
        "x" * 65,
        "x" * 201,
        " " + "x" * 200,
        "x" * 64 + " ",
    ]
)
# A record each serializer accepts, which the property test then changes in a few keys.
VALID = {
    "UserInput": {"name": "Ann", "email": "ann@example.com"},
    "ProductInput": {"name": "Lamp", "price": "12.50"},
    "OrderInput": {"user_id": 1, "product_id": 2, "quantity": 3},
}
FAST_VALUES = EDGY | st.integers(-3, 2**63) | st.floats(-1e12, 1e12) | st.booleans() | st.none()


def drf_clean(serializer_class, record):
    """What DRF's own ``run_validation`` gives ``record``: its values, or None if refused."""
    try:
        return dict(serializer_class().run_validation(record))
    except v.serializers.ValidationError:
        return None


def typed(values: dict | None):
    return values and {key: (type(value), value) for key, value in values.items()}


@pytest.mark.parametrize("serializer_class", [v.UserInput, v.ProductInput, v.OrderInput])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_fast_accept_gives_what_drf_gives_or_leaves_the_record_to_drf(serializer_class, data):
    """Whatever the fast accept accepts, DRF accepts, with the same values and types."""
    names = [*serializer_class().fields, "stray"]
    changes = data.draw(st.dictionaries(st.sampled_from(names), FAST_VALUES, max_size=3))
    record = {**VALID[serializer_class.__name__], **changes}
    accepted = v.FastAccept(serializer_class())(record)
    if accepted is not None:
        assert typed(accepted) == typed(drf_clean(serializer_class, record))


SINGLE_VALUES = [
    *EDGY.elements,
    *(0, 1, -1, 3, 10**6, 10**6 + 1, 2**31, 2**63, 10**18, 10**30),
    *(0.0, 12.5, 12.505, -1.5, 1e15, float("nan")),
    *(True, False, None, [], {}, ["a"]),
]


@pytest.mark.parametrize("serializer_class", [v.UserInput, v.ProductInput, v.OrderInput])
def test_the_fast_accept_agrees_with_drf_on_every_edge_of_every_field(serializer_class):
    """Each field, in turn, given each edge value in an otherwise valid record."""
    accept = v.FastAccept(serializer_class())
    taken = 0
    for name in [*serializer_class().fields, "stray"]:
        for value in SINGLE_VALUES:
            record = {**VALID[serializer_class.__name__], name: value}
            accepted = accept(record)
            if accepted is not None:
                taken += 1
                assert typed(accepted) == typed(drf_clean(serializer_class, record)), record
    assert taken  # the shortcut is taken for some of them


@pytest.mark.parametrize(
    "serializer_class,record",
    [
        (v.UserInput, {"name": " Ann ", "email": " Ann@Example.COM "}),
        (v.UserInput, {"id": 7, "name": "Ann", "email": "a@b.co", "is_active": False}),
        (v.UserInput, {"name": "B", "email": "b@b.co", "credit_limit": "10.50", "city": "Oslo"}),
        (v.UserInput, {"name": "C", "email": "c@b.co", "customer_type": "business"}),
        (v.ProductInput, {"name": "Lamp", "price": "12.50", "stock": 3, "sku": "L-1"}),
        (v.ProductInput, {"name": "Desk", "price": 99.5}),
        (v.OrderInput, {"user_id": 1, "product_id": 2, "quantity": 3, "status": "paid"}),
    ],
)
def test_usual_records_are_accepted_without_drf(serializer_class, record):
    """The shortcut is taken for the records clients send, with DRF's values."""
    accepted = v.FastAccept(serializer_class())(record)
    assert accepted is not None
    assert typed(accepted) == typed(drf_clean(serializer_class, record))


def test_a_serializer_with_its_own_validate_is_never_shortcut():
    class Checked(v.UserInput):
        def validate(self, attrs):
            return attrs

    assert v.FastAccept(Checked())({"name": "Ann", "email": "a@b.co"}) is None


MARK = "qz§echo"  # text no rule's message holds: its presence in one is an echo
MARKED_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8).map(MARK.__add__),
    lambda children: (
        st.lists(children, min_size=1, max_size=2)
        | st.dictionaries(st.text(max_size=4).map(MARK.__add__), children, min_size=1, max_size=2)
    ),
    max_leaves=4,
)


@pytest.mark.parametrize("serializer_class", [v.UserInput, v.ProductInput, v.OrderInput])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_rejection_never_echoes_the_value_sent(serializer_class, data):
    """Whatever a field is sent (text, a list, an object, nested), its rejection's messages
    and reason name the rule, never the value: no repr of it, no text of it."""
    names = list(serializer_class().fields)
    changes = data.draw(st.dictionaries(st.sampled_from(names), MARKED_VALUES, min_size=1))
    record = {**VALID[serializer_class.__name__], **changes}
    errors = field_errors(serializer_class(), record)
    shown = v.reason(errors) + repr(errors)
    assert MARK not in shown
    for value in changes.values():
        if isinstance(value, list | dict):
            assert repr(value) not in shown and str(value) not in shown


@pytest.mark.parametrize(
    ("serializer_class", "field", "choices"),
    [(v.OrderInput, "status", Order.Status), (v.UserInput, "customer_type", User.CustomerType)],
)
@pytest.mark.parametrize("value", [{"a": [1, 2]}, ["paid"], 1, True, "Paid"])
def test_a_choice_not_made_names_the_choices(serializer_class, field, choices, value):
    """A value not among the choices (a nested one, another type, another case) is refused
    with the list of choices, as a client can read it."""
    record = {**VALID[serializer_class.__name__], field: value}
    message = v.CHOICE_INVALID.format(choices=", ".join(choices.values))
    assert field_errors(serializer_class(), record) == {field: [message]}
